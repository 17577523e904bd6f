"""The serving key cache while the control plane cannot be reached."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import OperationalError

from atlasrec.control.tables import Tenant
from atlasrec.errors import UnavailableError
from serving.deps import KeyCache

SHOP = Tenant(id="shop", home_region="eu", sharing="solo")


class ControlPlane:
    """Answers keys, or fails as an unreachable database does; counts the calls."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def authenticate(self, api_key: str) -> Tenant | None:
        self.calls += 1
        if self.down:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return SHOP if api_key == "good" else None


def test_a_known_answer_stands_while_the_control_plane_is_down_then_expires() -> None:
    control = ControlPlane()
    cache = KeyCache(control.authenticate, ttl_s=0.01, stale_s=0.3, retry_s=0.05)
    assert cache.lookup("good") is SHOP and cache.lookup("bad") is None
    control.down = True
    time.sleep(0.02)
    assert cache.lookup("good") is SHOP  # stale, while down
    assert cache.lookup("bad") is None  # an unknown key stays unknown
    assert cache.stale_answers == 2 and control.calls == 3  # the second waited out retry_s
    with pytest.raises(UnavailableError, match="control plane cannot be reached"):
        cache.lookup("never-seen")
    time.sleep(0.35)
    with pytest.raises(UnavailableError):
        cache.lookup("good")  # older than stale_s: no longer trusted
    control.down = False
    time.sleep(0.06)
    assert cache.lookup("good") is SHOP
