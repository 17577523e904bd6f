"""The audit UI's sign-in throttle: failed attempts counted in the control plane.

Every process of every region counts in the same table, so running more workers does not
give a guesser more attempts. The throttle cannot be used to lock an officer out (OWASP's
"device cookies"): a browser an officer has signed in with before carries a signed device
token, and its failures are counted against that token alone. Failures from other clients
count against:

- the (officer, client) pair: one client guessing one account is stopped at `pair_limit`;
- the client across accounts: password spraying from one address is stopped at
  `client_limit`;
- the officer from every unknown client together: a distributed guess at one account is
  stopped at `account_limit`; the officer's own known browsers still sign in.

Each limit counts failures in a sliding window of `window_s` seconds. Keys are stored as
SHA-256 digests, so the table holds neither officer ids nor client addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from atlasrec.control.tables import SignInFailure


@dataclass(frozen=True)
class Limit:
    """At most `attempts` failures per `key` in the window."""

    key: str
    attempts: int

    @property
    def digest(self) -> str:
        """What is stored for the key."""
        return hashlib.sha256(self.key.encode()).hexdigest()


def client_of(host: str | None) -> str:
    """A client's address as the throttle counts it (IPv6: its /64, one site's network)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SignInThrottle:
    """Failed sign-ins per device, per (officer, client), per client and per officer."""

    def __init__(
        self,
        engine: Engine,
        *,
        window_s: float = 300.0,
        device_limit: int = 5,
        pair_limit: int = 5,
        client_limit: int = 20,
        account_limit: int = 50,
    ) -> None:
        self.engine = engine
        self.window_s = window_s
        self.device_limit = device_limit
        self.pair_limit = pair_limit
        self.client_limit = client_limit
        self.account_limit = account_limit

    def limits(self, officer_id: str, client: str, device: str | None) -> list[Limit]:
        """What an attempt counts against: its device alone when it has one of the officer's."""
        if device is not None:
            return [Limit(f"device:{device}", self.device_limit)]
        return [
            Limit(f"pair:{officer_id}|{client}", self.pair_limit),
            Limit(f"client:{client}", self.client_limit),
            Limit(f"account:{officer_id}", self.account_limit),
        ]

    def retry_after(self, limits: Sequence[Limit]) -> float:
        """Seconds until every limit allows another attempt (0: now)."""
        now = time.time()
        digests = {limit.digest: limit.attempts for limit in limits}
        with Session(self.engine) as session:
            rows = session.exec(
                select(SignInFailure.key, SignInFailure.at)
                .where(col(SignInFailure.key).in_(digests))
                .where(col(SignInFailure.at) > now - self.window_s)
                .order_by(col(SignInFailure.at).desc())
            ).all()
        times: dict[str, list[float]] = {}
        for key, at in rows:
            times.setdefault(key, []).append(at)
        wait = 0.0
        for key, newest_first in times.items():
            if len(newest_first) >= digests[key]:
                # The oldest failure that keeps the count at the limit must leave the window.
                wait = max(wait, newest_first[digests[key] - 1] + self.window_s - now)
        return wait

    def failed(self, limits: Sequence[Limit]) -> None:
        """Count a failed attempt against each limit (and forget failures past the window)."""
        now = time.time()
        with Session(self.engine) as session, session.begin():
            past = col(SignInFailure.at) <= now - self.window_s
            session.execute(delete(SignInFailure).where(past))
            session.add_all(SignInFailure(key=limit.digest, at=now) for limit in limits)

    def succeeded(self, limits: Sequence[Limit]) -> None:
        """Forget the failures of the device or (officer, client) pair that signed in.

        The client's and the officer's counts stay: a correct password from one client says
        nothing about the others' guesses.
        """
        kept = ("client:", "account:")
        forget = [limit.digest for limit in limits if not limit.key.startswith(kept)]
        if forget:
            with Session(self.engine) as session, session.begin():
                session.execute(delete(SignInFailure).where(col(SignInFailure.key).in_(forget)))

    def count(self, limit: Limit) -> int:
        """Failures counted against `limit` in the window."""
        with Session(self.engine) as session:
            return session.exec(
                select(func.count())
                .select_from(SignInFailure)
                .where(col(SignInFailure.key) == limit.digest)
                .where(col(SignInFailure.at) > time.time() - self.window_s)
            ).one()
