"""The event log a region's processes share, as the settings configure it."""

from __future__ import annotations

from atlasrec.boundary import Boundary
from atlasrec.eventlog.base import EventLog
from atlasrec.eventlog.local import LocalEventLog
from atlasrec.settings import Settings


def open_event_log(settings: Settings, boundary: Boundary) -> EventLog:
    """JetStream when `event_log_url` is set, else the embedded log in the region's folder."""
    region = boundary.region
    if settings.event_log_url is None:
        folder = settings.region_dir(region) / "eventlog"
        return LocalEventLog(region, boundary, folder, ack_wait_s=settings.event_ack_wait_s)
    from atlasrec.eventlog.jetstream import JetStreamEventLog  # only with a NATS server

    return JetStreamEventLog(
        region,
        boundary,
        settings.event_log_url,
        root=settings.event_log_root,
        duplicate_window_s=settings.event_duplicate_window_s,
        ack_wait_s=settings.event_ack_wait_s,
    )
