"""One entry point from a raw verified delivery to log records, for live and spooled input."""

from __future__ import annotations

from multidict import CIMultiDict

from service.log.records import DeliveryRecord, EventRecord
from service.log.spool import RawDelivery
from service.webhooks import kapso, meta


def parse_raw(raw: RawDelivery) -> tuple[DeliveryRecord, list[EventRecord]]:
    """Parse a verified delivery of either kind; deterministic, so a drained spool record
    yields exactly the rows the live request would have."""
    headers = CIMultiDict(raw.headers)
    if raw.kind == meta.KIND:
        delivery, events = meta.parse_delivery(raw.body, headers, raw.secret_id, raw.received_at)
        return delivery._replace(
            key_is_body_sha256=meta.key_matches_body(headers, raw.body)
        ), events
    return kapso.parse_delivery(raw.body, headers, raw.secret_id, raw.received_at)
