"""A region's online feature store: fresh per-tenant features for the serving path.

`OnlineStore(region, backend, boundary).scoped(scope, actor=...)` admits the scope at the
region's boundary and returns a `ScopedOnlineStore` whose every key lives under
`atlasrec:{region}:{tenant_id}:`, built only from the admitted scope. User keys and names
given by callers are percent-encoded, so no argument can reach outside its sub-namespace.
The backend is in-process (`MemoryBackend`, the embedded default) or Redis (`RedisBackend`).
"""

from __future__ import annotations

import heapq
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
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


Write = tuple[str, str, Any]
"""`("push", key, values)`, `("incr", key, scores)` or `("max", key, scores)`."""
Mark = tuple[str, int, Sequence[Write]]
"""`(bitmap key, bit, writes)`: writes applied once per bit."""
APPLIED_BLOCK = 1 << 20
"""Sequence numbers per applied-bitmap key (128 KiB each)."""
APPLIED_TTL_S = 86_400.0


class OnlineStoreUnavailable(AtlasRecError):
    """The online store's backend (Redis) cannot be reached."""


class OnlineBackend(Protocol):
    """The few key-value primitives the online store needs; keys are exact names."""

    def push_trim(self, key: str, values: Sequence[str], cap: int) -> None:
        """Push `values` to the head of a list, one by one, then keep its first `cap` items."""

    def list_range(self, key: str, n: int) -> list[str]:
        """The first `n` items of a list (empty if it does not exist)."""

    def zset_update(self, key: str, scores: Mapping[str, float], *, mode: str = "incr") -> None:
        """Update a sorted set atomically: add to scores (`incr`) or raise them (`max`)."""

    def zset_scores(self, key: str, members: Sequence[str]) -> list[float | None]:
        """The scores of `members` in a sorted set, None where a member is missing."""

    def zsets_scores(self, keys: Sequence[str], members: Sequence[str]) -> list[list[float | None]]:
        """The scores of `members` in each of several sorted sets, in one round trip."""

    def zset_top(self, key: str, n: int) -> list[tuple[str, float]]:
        """The `n` highest-scored members, highest first (ties: member order, descending)."""

    def record_events(self, writes: Sequence[tuple[str, str, Any]], cap: int) -> None:
        """Apply list pushes and sorted-set updates in one atomic step.

        Each write is `("push", key, values)`, `("incr", key, scores)` or
        `("max", key, scores)`; pushed lists keep their first `cap` items.
        """

    def record_once(self, marks: Sequence[Mark], cap: int, ttl_s: float) -> int:
        """Apply each mark's writes unless its bit is already set, setting it, atomically.

        A mark is `(bitmap key, bit, writes)`; bitmaps expire `ttl_s` after their last use.
        Returns how many marks were new (their writes applied).
        """

    def get(self, key: str) -> str | None:
        """A string value, or None if it is missing or expired."""

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Set a string value, expiring after `ttl_s` seconds when given."""

    def set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        """Set a string value only if the key does not exist; whether it was set."""

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
        self._zsets: dict[str, dict[str, float]] = {}
        self._strings: dict[str, tuple[str, float | None]] = {}
        self._bits: dict[str, set[int]] = {}

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

    def _zset_update(self, key: str, scores: Mapping[str, float], mode: str) -> None:
        zset = self._zsets.setdefault(key, {})
        for member, score in scores.items():
            old = zset.get(member)
            if old is None:
                zset[member] = float(score)
            elif mode == "incr":
                zset[member] = old + score
            elif score > old:
                zset[member] = float(score)

    def zset_update(self, key: str, scores: Mapping[str, float], *, mode: str = "incr") -> None:
        """Update a sorted set atomically: add to scores (`incr`) or raise them (`max`)."""
        with self._lock:
            self._zset_update(key, scores, _zset_mode(mode))

    def zset_scores(self, key: str, members: Sequence[str]) -> list[float | None]:
        """The scores of `members` in a sorted set, None where a member is missing."""
        with self._lock:
            stored = self._zsets.get(key, {})
            return [stored.get(member) for member in members]

    def zsets_scores(self, keys: Sequence[str], members: Sequence[str]) -> list[list[float | None]]:
        """The scores of `members` in each of several sorted sets."""
        return [self.zset_scores(key, members) for key in keys]

    def zset_top(self, key: str, n: int) -> list[tuple[str, float]]:
        """The `n` highest-scored members, highest first (ties: member order, descending)."""
        with self._lock:
            stored = list(self._zsets.get(key, {}).items())
        return heapq.nlargest(max(n, 0), stored, key=lambda kv: (kv[1], kv[0]))

    def record_events(self, writes: Sequence[tuple[str, str, Any]], cap: int) -> None:
        """Apply list pushes and sorted-set updates in one atomic step."""
        with self._lock:
            self._apply(writes, cap)

    def _apply(self, writes: Sequence[Write], cap: int) -> None:
        for op, key, payload in writes:
            if op == "push":
                self._lists[key] = [*reversed(payload), *self._lists.get(key, [])][:cap]
            else:
                self._zset_update(key, payload, _zset_mode(op))

    def record_once(self, marks: Sequence[Mark], cap: int, ttl_s: float) -> int:
        """Apply each mark's writes unless its bit is already set (bitmaps do not expire here)."""
        applied = 0
        with self._lock:
            for key, bit, writes in marks:
                bits = self._bits.setdefault(key, set())
                if bit not in bits:
                    bits.add(bit)
                    self._apply(writes, cap)
                    applied += 1
        return applied

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

    def set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        """Set a string value only if the key does not exist; whether it was set."""
        deadline = None if ttl_s is None else time.monotonic() + ttl_s
        with self._lock:
            if self._live(key) is not None:
                return False
            self._strings[key] = (value, deadline)
            return True

    def delete(self, keys: Sequence[str]) -> int:
        """Delete keys by exact name; the number that existed."""
        deleted = 0
        with self._lock:
            for key in keys:
                found = self._live(key) is not None
                found = self._lists.pop(key, None) is not None or found
                found = self._zsets.pop(key, None) is not None or found
                self._strings.pop(key, None)
                found = self._bits.pop(key, None) is not None or found
                deleted += found
        return deleted

    def scan_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with `prefix` (a snapshot taken when called)."""
        with self._lock:
            keys = [k for k in list(self._strings) if k.startswith(prefix) and self._live(k)]
            keys += [k for k in (*self._lists, *self._zsets, *self._bits) if k.startswith(prefix)]
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
                # one retry covers a stale pooled connection; never a timeout, where the
                # command may have run (a second LPUSH or ZINCRBY would count it twice)
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
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

        def do() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                if values:
                    pipe.lpush(key, *values)
                pipe.ltrim(key, 0, cap - 1)  # a smaller cap trims even with nothing pushed
                pipe.execute()

        self._call(do)

    def list_range(self, key: str, n: int) -> list[str]:
        """The first `n` items of a list (empty if it does not exist)."""
        if n <= 0:
            return []
        return self._call(lambda: [str(v) for v in self._client.lrange(key, 0, n - 1)])

    @staticmethod
    def _queue_zset(pipe: Any, key: str, scores: Mapping[str, float], mode: str) -> None:
        if _zset_mode(mode) == "incr":
            for member, amount in scores.items():
                pipe.zincrby(key, amount, member)
        elif scores:
            pipe.zadd(key, dict(scores), gt=True)  # new members are added, others only raised

    def zset_update(self, key: str, scores: Mapping[str, float], *, mode: str = "incr") -> None:
        """Update a sorted set atomically: add to scores (`incr`) or raise them (`max`)."""
        self.record_events([(mode, key, scores)], cap=1)

    def zset_scores(self, key: str, members: Sequence[str]) -> list[float | None]:
        """The scores of `members` in a sorted set, None where a member is missing."""
        if not members:
            return []
        values = self._call(lambda: self._client.zmscore(key, list(members)))
        return [None if v is None else float(v) for v in values]

    def zsets_scores(self, keys: Sequence[str], members: Sequence[str]) -> list[list[float | None]]:
        """The scores of `members` in each of several sorted sets (one pipelined round trip)."""
        if not members:
            return [[] for _ in keys]

        def do() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zmscore(key, list(members))
                return list(pipe.execute())

        return [[None if v is None else float(v) for v in values] for values in self._call(do)]

    def zset_top(self, key: str, n: int) -> list[tuple[str, float]]:
        """The `n` highest-scored members, highest first (ties: member order, descending)."""
        if n <= 0:
            return []
        pairs: list[tuple[Any, Any]] = self._call(
            lambda: self._client.zrevrange(key, 0, n - 1, withscores=True)  # type: ignore[arg-type, return-value]
        )
        return [(str(member), float(score)) for member, score in pairs]

    def record_events(self, writes: Sequence[tuple[str, str, Any]], cap: int) -> None:
        """Apply list pushes and sorted-set updates in one MULTI/EXEC transaction."""
        if not any(payload for _, _, payload in writes):
            return

        def do() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for op, key, payload in writes:
                    if op == "push":
                        if payload:
                            pipe.lpush(key, *payload)
                            pipe.ltrim(key, 0, cap - 1)
                    else:
                        self._queue_zset(pipe, key, payload, op)
                pipe.execute()

        self._call(do)

    def record_once(self, marks: Sequence[Mark], cap: int, ttl_s: float) -> int:
        """Apply each mark's writes unless its bit is set, in one Lua script (atomic)."""
        if not marks:
            return 0
        keys: dict[str, int] = {}

        def ref(key: str) -> int:
            return keys.setdefault(key, len(keys) + 1)

        entries = [
            [ref(mark), bit, [[op, ref(key), payload] for op, key, payload in writes]]
            for mark, bit, writes in marks
        ]
        argv = [cap, max(1, round(ttl_s)), json.dumps(entries)]
        return int(self._call(lambda: self._once(keys=list(keys), args=argv)))

    @cached_property
    def _once(self) -> Any:
        return self._client.register_script(_RECORD_ONCE)

    def get(self, key: str) -> str | None:
        """A string value, or None if it is missing or expired."""
        value = self._call(lambda: self._client.get(key))
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Set a string value, expiring after `ttl_s` seconds when given."""
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        self._call(lambda: self._client.set(key, value, px=px))

    def set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        """Set a string value only if the key does not exist (SET NX); whether it was set."""
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        return bool(self._call(lambda: self._client.set(key, value, px=px, nx=True)))

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


_RECORD_ONCE = """
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local applied, pushed, marked = 0, {}, {}
for _, e in ipairs(cjson.decode(ARGV[3])) do
  marked[e[1]] = true
  if redis.call('SETBIT', KEYS[e[1]], e[2], 1) == 0 then
    applied = applied + 1
    for _, w in ipairs(e[3]) do
      local key = KEYS[w[2]]
      if w[1] == 'push' then
        for _, v in ipairs(w[3]) do redis.call('LPUSH', key, v) end
        pushed[key] = true
      elseif w[1] == 'incr' then
        for m, v in pairs(w[3]) do redis.call('ZINCRBY', key, v, m) end
      else
        for m, v in pairs(w[3]) do redis.call('ZADD', key, 'GT', v, m) end
      end
    end
  end
end
for key, _ in pairs(pushed) do redis.call('LTRIM', key, 0, cap - 1) end
for index, _ in pairs(marked) do redis.call('EXPIRE', KEYS[index], ttl) end
return applied
"""


def _zset_mode(mode: str) -> str:
    if mode not in ("incr", "max"):
        raise ValueError(f"unknown sorted-set update mode {mode!r}")
    return mode


def make_backend(redis_url: str | None, *, timeout_s: float = 0.5) -> OnlineBackend:
    """`MemoryBackend` when no Redis URL is configured, `RedisBackend(redis_url)` otherwise."""
    return MemoryBackend() if redis_url is None else RedisBackend(redis_url, timeout_s=timeout_s)


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


def _scores(values: Mapping[str, float], what: str) -> dict[str, float]:
    """Item scores keyed by valid item ids; every score must be finite."""
    scores: dict[str, float] = {}
    for item, value in values.items():
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} of item {item!r} must be finite, got {value}")
        scores[_text(item, "item id")] = float(value)
    return scores


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
        boundary.require_region(region, "online store")
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
        applied = f"{self.namespace}:{scope.region.value}:applied:"
        return ScopedOnlineStore(scope, self.backend, prefix, applied)


class ScopedOnlineStore:
    """One tenant's part of the online store: every key is under the tenant's own prefix.

    The one exception is the region's applied-events bitmaps (`applied`): a bit per event log
    sequence number, shared by the region's tenants, that makes applying a logged event
    idempotent. They hold no tenant data.
    """

    def __init__(self, scope: Scope, backend: OnlineBackend, prefix: str, applied: str) -> None:
        self.scope = scope
        self._backend = backend
        self._prefix = prefix
        self._applied = applied

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
        """Add weights to per-item counters (popularity), in one atomic update."""
        self._backend.zset_update(self._key("items"), _scores(item_weights, "weight"))

    def item_counts(self, item_ids: Sequence[str]) -> dict[str, float]:
        """The counters of `item_ids` (0.0 for items never counted)."""
        ids = [_text(item, "item id") for item in item_ids]
        values = self._backend.zset_scores(self._key("items"), ids)
        return {item: 0.0 if v is None else v for item, v in zip(ids, values, strict=True)}

    def item_last_seen(self, item_ids: Sequence[str]) -> dict[str, float | None]:
        """When each item was last interacted with (epoch seconds), None if never."""
        ids = [_text(item, "item id") for item in item_ids]
        return dict(zip(ids, self._backend.zset_scores(self._key("last"), ids), strict=True))

    def item_stats(self, item_ids: Sequence[str]) -> tuple[list[float], list[float | None]]:
        """(counters, last-seen times) of `item_ids`, read together in one round trip."""
        ids = [_text(item, "item id") for item in item_ids]
        counts, last = self._backend.zsets_scores([self._key("items"), self._key("last")], ids)
        return [0.0 if v is None else v for v in counts], last

    def top_items(self, n: int) -> list[tuple[str, float]]:
        """The `n` items with the highest counters, highest first."""
        return self._backend.zset_top(self._key("items"), n)

    def last_event_at(self) -> float | None:
        """The timestamp of the newest event applied to the tenant's features, or None."""
        newest = self._backend.zset_top(self._key("last"), 1)
        return newest[0][1] if newest else None

    def record_events(
        self,
        events: Sequence[tuple[str, str, float, float]],
        *,
        cap: int = 200,
    ) -> None:
        """Apply `(user_key, item_id, weight, ts)` events in one atomic step, oldest first.

        Each user's recent list gains the items, each item's counter its weights, and each
        item's last-seen time is raised to the event's time.
        """
        self._backend.record_events(self._writes(events, cap), cap)

    def record_logged(
        self,
        events: Sequence[tuple[str, str, float, float]],
        seqs: Sequence[int],
        *,
        log_id: str,
        cap: int = 200,
        ttl_s: float = APPLIED_TTL_S,
    ) -> int:
        """Apply events of the region's event log once each, by sequence number, atomically.

        An event whose sequence number (in the log identified by `log_id`) was applied before,
        by this process or another or a consumer's redelivery, changes nothing. Returns how
        many were applied now.
        """
        applied = f"{self._applied}{_part(log_id, 'log id')}:"
        marks = [
            (f"{applied}{seq // APPLIED_BLOCK}", seq % APPLIED_BLOCK, self._writes([e], cap))
            for e, seq in zip(events, seqs, strict=True)
        ]
        return self._backend.record_once(marks, cap, ttl_s)

    def record_marked(
        self,
        events: Sequence[tuple[str, str, float, float]],
        mark: str,
        bit: int,
        *,
        cap: int = 200,
        ttl_s: float = APPLIED_TTL_S,
    ) -> int:
        """Apply a batch of events once per (`mark`, `bit`), atomically; 1 if applied now.

        For rows without a log sequence number (ingested files): the caller names each batch
        by a stable mark (a file) and bit (a chunk number). The mark lives under the tenant's
        prefix, so `clear()` forgets it with the features it guards.
        """
        if bit < 0:
            raise InvalidInputError(f"bit must not be negative, got {bit}")
        key = self._key("applied", _part(mark, "mark"))
        return self._backend.record_once([(key, bit, self._writes(events, cap))], cap, ttl_s)

    def _writes(self, events: Sequence[tuple[str, str, float, float]], cap: int) -> list[Write]:
        if cap < 1:
            raise InvalidInputError(f"cap must be at least 1, got {cap}")
        recent: dict[str, list[str]] = {}
        counts: dict[str, float] = {}
        last: dict[str, float] = {}
        for user_key, item, weight, ts in events:
            item = _text(item, "item id")
            recent.setdefault(_part(user_key, "user key"), []).append(item)
            counts[item] = counts.get(item, 0.0) + weight
            last[item] = max(last.get(item, ts), ts)
        writes: list[Write] = [
            ("push", self._key("recent", user), items) for user, items in recent.items()
        ]
        writes += [
            ("incr", self._key("items"), _scores(counts, "weight")),
            ("max", self._key("last"), _scores(last, "timestamp")),
        ]
        return writes

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

    def claim(self, name: str, ttl_s: float | None = None) -> bool:
        """Claim `name` for this caller: True for the first claimant until it expires."""
        return self._backend.set_if_absent(self._key("claim", _part(name, "name")), "1", ttl_s)

    def release(self, name: str) -> None:
        """Drop a claim (so another caller may take it)."""
        self._backend.delete([self._key("claim", _part(name, "name"))])

    def clear(self) -> int:
        """Delete this tenant's keys (found by scanning its prefix); the number deleted."""
        keys = list(self._backend.scan_prefix(self._prefix))
        deleted = 0
        for start in range(0, len(keys), _SCAN_BATCH):
            deleted += self._backend.delete(keys[start : start + _SCAN_BATCH])
        return deleted
