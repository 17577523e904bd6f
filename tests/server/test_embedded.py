"""The embedded engine's process-wide settings."""

from __future__ import annotations

import logging

import pytest
from flwr.common.logger import log

from server.embedded import quiet_duplicate_logs


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_flower_records_reach_a_root_handler_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    flower = logging.getLogger("flwr")
    monkeypatch.setattr(flower, "propagate", True)
    root, own = Collect(), Collect()  # a root handler as opacus installs; Flower's own
    logging.getLogger().addHandler(root)
    flower.addHandler(own)
    try:
        log(logging.WARNING, "before")
        quiet_duplicate_logs()
        log(logging.WARNING, "after")
    finally:
        logging.getLogger().removeHandler(root)
        flower.removeHandler(own)
    assert root.messages == ["before"]
    assert own.messages == ["before", "after"]  # still printed, once, by Flower's handler
