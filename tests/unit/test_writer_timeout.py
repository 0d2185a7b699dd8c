"""LogWriter.append gives up after commit_timeout; a commit that lands later is still kept."""

from datetime import UTC, datetime

import pytest

from service.log.writer import LogWriter, StoreUnavailable
from service.webhooks import kapso
from tests import vectors


def _delivery():
    return kapso.parse_delivery(vectors.KAPSO_BODY, {}, "abcd1234", datetime.now(UTC))


async def test_append_times_out_and_a_late_commit_is_dropped_quietly():
    writer = LogWriter(pool=None, commit_timeout=0.05)  # not started: nothing commits
    with pytest.raises(StoreUnavailable, match="did not commit in time"):
        await writer.append(*_delivery())
    [pending] = writer._queue
    assert pending.future.done()
    writer._fail([pending], "late")  # a late answer does not touch the finished request
