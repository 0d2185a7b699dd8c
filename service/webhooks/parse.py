"""One entry point from a raw verified delivery to log records, for live and spooled input."""

from __future__ import annotations

from multidict import CIMultiDict

from service.log.records import DeliveryRecord, EventRecord
from service.log.spool import RawDelivery
from service.webhooks import kapso, meta


def parse_raw(raw: RawDelivery) -> tuple[DeliveryRecord, list[EventRecord]]:
    """Parse a verified delivery of either kind; deterministic, so a drained spool record
    yields exactly the rows the live request would have."""
    parser = meta if raw.kind == meta.KIND else kapso
    return parser.parse_delivery(raw.body, CIMultiDict(raw.headers), raw.secret_id, raw.received_at)
