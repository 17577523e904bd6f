"""A region's online feature store: fresh per-tenant features for the serving path.

`OnlineStore(region, backend, boundary).scoped(scope, actor=...)` admits the scope at the
region's boundary and returns a `ScopedOnlineStore` whose every key lives under
`atlasrec:{region}:{tenant_id}:`, built only from the admitted scope. User keys and names
given by callers are percent-encoded, so no argument can reach outside its sub-namespace.
The backend is in-process (`MemoryBackend`, the embedded default) or Redis (`RedisBackend`).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from atlasrec.boundary import Boundary
from atlasrec.errors import AtlasRecError, ConfigError, InvalidInputError
from atlasrec.tenancy import Region, Scope, validate_tenant_id

DEFAULT_NAMESPACE = "atlasrec"
_NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SCAN_BATCH = 500
_T = TypeVar("_T")


class OnlineStoreUnavailable(AtlasRecError):
    """The online store's backend (Redis) cannot be reached."""


class OnlineBackend(Protocol):
    """The few key-value primitives the online store needs; keys are exact names."""

    def push_trim(self, key: str, values: Sequence[str], cap: int) -> None:
        """Push `values` to the head of a list, one by one, then keep its first `cap` items."""

    def list_range(self, key: str, n: int) -> list[str]:
        """The first `n` items of a list (empty if it does not exist)."""

    def hash_incr(self, key: str, increments: Mapping[str, float]) -> None:
        """Add each increment to its hash field (missing fields count as 0), atomically."""

    def hash_get(self, key: str, fields: Sequence[str]) -> list[float | None]:
        """The values of `fields` in a hash, None where a field is missing."""

    def get(self, key: str) -> str | None:
        """A string value, or None if it is missing or expired."""

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Set a string value, expiring after `ttl_s` seconds when given."""

    def delete(self, keys: Sequence[str]) -> int:
        """Delete keys by exact name; the number that existed."""

    def scan_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with `prefix` (literally: no glob characters apply)."""

    def ping(self) -> None:
        """Check the backend is reachable (raises `OnlineStoreUnavailable` if not)."""

    def close(self) -> None:
        """Release connections."""


class MemoryBackend:
    """In-process, thread-safe backend (embedded mode and tests); TTLs are honoured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lists: dict[str, list[str]] = {}
        self._hashes: dict[str, dict[str, float]] = {}
        self._strings: dict[str, tuple[str, float | None]] = {}

    def _live(self, key: str) -> tuple[str, float | None] | None:
        entry = self._strings.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= time.monotonic():
            del self._strings[key]
            return None
        return entry

    def push_trim(self, key: str, values: Sequence[str], cap: int) -> None:
        """Push `values` to the head of a list, one by one, then keep its first `cap` items."""
        with self._lock:
            items = [*reversed(values), *self._lists.get(key, [])][:cap]
            if items:
                self._lists[key] = items
            else:
                self._lists.pop(key, None)

    def list_range(self, key: str, n: int) -> list[str]:
        """The first `n` items of a list (empty if it does not exist)."""
        with self._lock:
            return list(self._lists.get(key, [])[:n])

    def hash_incr(self, key: str, increments: Mapping[str, float]) -> None:
        """Add each increment to its hash field (missing fields count as 0), atomically."""
        with self._lock:
            fields = self._hashes.setdefault(key, {})
            for field, amount in increments.items():
                fields[field] = fields.get(field, 0.0) + amount

    def hash_get(self, key: str, fields: Sequence[str]) -> list[float | None]:
        """The values of `fields` in a hash, None where a field is missing."""
        with self._lock:
            stored = self._hashes.get(key, {})
            return [stored.get(field) for field in fields]

    def get(self, key: str) -> str | None:
        """A string value, or None if it is missing or expired."""
        with self._lock:
            entry = self._live(key)
            return None if entry is None else entry[0]

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Set a string value, expiring after `ttl_s` seconds when given."""
        deadline = None if ttl_s is None else time.monotonic() + ttl_s
        with self._lock:
            self._strings[key] = (value, deadline)

    def delete(self, keys: Sequence[str]) -> int:
        """Delete keys by exact name; the number that existed."""
        deleted = 0
        with self._lock:
            for key in keys:
                found = self._live(key) is not None
                found = self._lists.pop(key, None) is not None or found
                found = self._hashes.pop(key, None) is not None or found
                self._strings.pop(key, None)
                deleted += found
        return deleted

    def scan_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with `prefix` (a snapshot taken when called)."""
        with self._lock:
            keys = [k for k in list(self._strings) if k.startswith(prefix) and self._live(k)]
            keys += [k for k in (*self._lists, *self._hashes) if k.startswith(prefix)]
        return iter(keys)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class RedisBackend:
    """Redis backend (redis-py). Multi-key writes run in MULTI/EXEC transactions.

    Socket timeouts are short, so a dead Redis fails fast with `OnlineStoreUnavailable`.
    """

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),  # one retry covers a stale pooled connection
            )
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL for the online store: {exc}") from exc
        kwargs = self._client.connection_pool.connection_kwargs
        self._where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _call(self, do: Callable[[], _T]) -> _T:
        try:
            return do()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise OnlineStoreUnavailable(
                f"online store unavailable: Redis at {self._where}: {reason}"
            ) from exc

    def push_trim(self, key: str, values: Sequence[str], cap: int) -> None:
        """Push `values` to the head of a list, one by one, then keep its first `cap` items."""
        if not values:
            return

        def do() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, *values)
                pipe.ltrim(key, 0, cap - 1)
                pipe.execute()

        self._call(do)

    def list_range(self, key: str, n: int) -> list[str]:
        """The first `n` items of a list (empty if it does not exist)."""
        if n <= 0:
            return []
        return self._call(lambda: [str(v) for v in self._client.lrange(key, 0, n - 1)])

    def hash_incr(self, key: str, increments: Mapping[str, float]) -> None:
        """Add each increment to its hash field (missing fields count as 0), atomically."""
        if not increments:
            return

        def do() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for field, amount in increments.items():
                    pipe.hincrbyfloat(key, field, amount)
                pipe.execute()

        self._call(do)

    def hash_get(self, key: str, fields: Sequence[str]) -> list[float | None]:
        """The values of `fields` in a hash, None where a field is missing."""
        if not fields:
            return []
        values = self._call(lambda: self._client.hmget(key, list(fields)))
        return [None if v is None else float(v) for v in values]

    def get(self, key: str) -> str | None:
        """A string value, or None if it is missing or expired."""
        value = self._call(lambda: self._client.get(key))
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Set a string value, expiring after `ttl_s` seconds when given."""
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        self._call(lambda: self._client.set(key, value, px=px))

    def delete(self, keys: Sequence[str]) -> int:
        """Delete keys by exact name; the number that existed."""
        if not keys:
            return 0
        return int(self._call(lambda: self._client.delete(*keys)))

    def scan_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with `prefix` (SCAN with the prefix glob-escaped)."""
        pattern = _glob_escape(prefix) + "*"
        keys = self._call(
            lambda: [str(k) for k in self._client.scan_iter(match=pattern, count=_SCAN_BATCH)]
        )
        return iter(keys)

    def ping(self) -> None:
        """Check Redis answers (raises `OnlineStoreUnavailable` if not)."""
        self._call(self._client.ping)

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()


def make_backend(redis_url: str | None) -> OnlineBackend:
    """`MemoryBackend` when no Redis URL is configured, `RedisBackend(redis_url)` otherwise."""
    return MemoryBackend() if redis_url is None else RedisBackend(redis_url)


def _part(text: str, what: str) -> str:
    """Percent-encode a caller-given key part (':', '*', '%' and non-ASCII all escaped)."""
    return quote(_text(text, what), safe="")


def _text(text: str, what: str) -> str:
    """`text` if it is a string Redis can store (UTF-8 encodable), else `InvalidInputError`."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} {text!r} is not valid UTF-8 text") from None
    return text


class OnlineStore:
    """The online feature store of one region; hands out tenant-scoped views."""

    def __init__(
        self,
        region: Region,
        backend: OnlineBackend,
        boundary: Boundary,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        if boundary.region != region:
            raise ConfigError(
                f"online store of region {region.value!r} was given the boundary of region "
                f"{boundary.region.value!r}"
            )
        if not _NAMESPACE_PATTERN.fullmatch(namespace):
            raise ConfigError(f"invalid online store namespace {namespace!r}")
        self.region = region
        self.backend = backend
        self.boundary = boundary
        self.namespace = namespace

    def scoped(self, scope: Scope, *, actor: str) -> ScopedOnlineStore:
        """A view of the store for `scope`, once the boundary admits it (refusals are audited)."""
        self.boundary.admit(scope, actor=actor, action="online_store.open")
        prefix = f"{self.namespace}:{scope.region.value}:{validate_tenant_id(scope.tenant_id)}:"
        return ScopedOnlineStore(scope, self.backend, prefix)


class ScopedOnlineStore:
    """One tenant's part of the online store: every key is under the tenant's own prefix."""

    def __init__(self, scope: Scope, backend: OnlineBackend, prefix: str) -> None:
        self.scope = scope
        self._backend = backend
        self._prefix = prefix

    def _key(self, kind: str, name: str | None = None) -> str:
        return self._prefix + kind + ("" if name is None else ":" + name)

    def push_recent(self, user_key: str, item_ids: Sequence[str], *, cap: int = 200) -> None:
        """Record items a user interacted with, oldest first; the list keeps the `cap` newest."""
        if cap < 1:
            raise InvalidInputError(f"cap must be at least 1, got {cap}")
        items = [_text(item, "item id") for item in item_ids]
        self._backend.push_trim(self._key("recent", _part(user_key, "user key")), items, cap)

    def recent(self, user_key: str, n: int = 50) -> list[str]:
        """The user's `n` most recent item ids, most recent first."""
        if n < 0:
            raise InvalidInputError(f"n must not be negative, got {n}")
        return self._backend.list_range(self._key("recent", _part(user_key, "user key")), n)

    def incr_items(self, item_weights: Mapping[str, float]) -> None:
        """Add weights to per-item counters (e.g. popularity), in one atomic update."""
        increments: dict[str, float] = {}
        for item, weight in item_weights.items():
            if not math.isfinite(weight):
                raise InvalidInputError(f"weight of item {item!r} must be finite, got {weight}")
            increments[_text(item, "item id")] = float(weight)
        self._backend.hash_incr(self._key("items"), increments)

    def item_counts(self, item_ids: Sequence[str]) -> dict[str, float]:
        """The counters of `item_ids` (0.0 for items never counted)."""
        ids = [_text(item, "item id") for item in item_ids]
        values = self._backend.hash_get(self._key("items"), ids)
        return {item: 0.0 if v is None else v for item, v in zip(ids, values, strict=True)}

    def get_json(self, name: str) -> Any:
        """The JSON value stored under `name`, or None if missing or expired."""
        raw = self._backend.get(self._key("json", _part(name, "name")))
        return None if raw is None else json.loads(raw)

    def set_json(self, name: str, value: Any, ttl_s: float | None = None) -> None:
        """Store a JSON-serialisable value under `name`, expiring after `ttl_s` seconds."""
        if ttl_s is not None and not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise InvalidInputError(f"ttl_s must be a positive number of seconds, got {ttl_s}")
        try:
            raw = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"value of {name!r} is not JSON-serialisable: {exc}") from exc
        self._backend.set(self._key("json", _part(name, "name")), raw, ttl_s)

    def clear(self) -> int:
        """Delete this tenant's keys (found by scanning its prefix); the number deleted."""
        keys = list(self._backend.scan_prefix(self._prefix))
        deleted = 0
        for start in range(0, len(keys), _SCAN_BATCH):
            deleted += self._backend.delete(keys[start : start + _SCAN_BATCH])
        return deleted
