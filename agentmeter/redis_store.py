"""A :class:`~agentmeter.BudgetStore` in Redis: one budget shared by many processes.

::

    from agentmeter.redis_store import RedisBudgetStore

    tracker = agentmeter.Tracker(budget_store=RedisBudgetStore("redis://budget-host:6379/0"))
    tracker.set_budget("customer-42", agentmeter.Budget(max_cost_usd=5))

Every operation is one server-side Lua script (registered once per store, run by
SHA), so a reservation is checked against ``used + reserved + requested`` and
booked in one atomic step: N processes sharing a budget cannot jointly overshoot it
by more than what calls already in flight spend beyond their reservations.

Layout per budget key ``K`` (all in one hash slot, so Redis Cluster works too):

- ``{prefix}{K}:s`` -- hash ``u1..u6`` (used) and ``r1..r6`` (reserved), integers in
  the order of :class:`~agentmeter.budget.Spend` (cost in micro-USD; exact below
  2**53, i.e. 9e15 tokens or 9 billion dollars);
- ``{prefix}{K}:r`` -- hash ``reservation id -> "t,i,o,c,l,x"`` (what it booked);
- ``{prefix}{K}:e`` -- sorted set ``reservation id -> deadline`` (server clock, ms).

A reservation not settled or released before its deadline (its process crashed)
is subtracted from ``reserved`` by the next script that touches the key, so a dead
process never holds budget for longer than ``reservation_ttl_s``.

**When Redis is unreachable** the store fails closed, never silently:

- :meth:`~RedisBudgetStore.reserve` (what ``check_budget`` calls before a call) and
  :meth:`~RedisBudgetStore.usage` raise :class:`BudgetStoreUnavailable`, which names
  the server (password masked). The call is not made: an unenforceable budget
  does not let spending through.
- :meth:`~RedisBudgetStore.settle`, :meth:`~RedisBudgetStore.release` and
  :meth:`~RedisBudgetStore.drop` describe spending that already happened; they are
  kept in a bounded in-process backlog (a warning is logged once per outage) and
  replayed in order as soon as Redis answers again, so the spend still reaches the
  shared budget. A backlog entry whose reply was lost mid-outage may be applied
  twice (at-least-once); past ``max_backlog`` the oldest entries are dropped, with
  an error logged.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "agentmeter.redis_store needs redis-py: pip install 'agentmeter-core[redis]'"
    ) from exc

from .budget import Spend, exceeded
from .errors import BudgetStoreUnavailable

__all__ = ["BudgetStoreUnavailable", "RedisBudgetStore"]

logger = logging.getLogger("agentmeter")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Shared by every script: the server's clock in ms, the state as 12 numbers, and the
# expiry of stale reservations. Amounts are integers kept exact as Lua doubles
# (below 2**53: 9e15 tokens or micro-USD) and written back with "%.0f", never
# in exponent notation. One HMGET and one HSET per script keep it short.
_LIB = """
local S, R, E = KEYS[1], KEYS[2], KEYS[3]
local FIELDS = {'u1','u2','u3','u4','u5','u6','r1','r2','r3','r4','r5','r6'}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function load()
  local cur = redis.call('HMGET', S, unpack(FIELDS))
  for i = 1, 12 do cur[i] = tonumber(cur[i]) or 0 end
  return cur
end
local function save(cur)
  local args = {}
  for i = 1, 12 do
    args[2 * i - 1] = FIELDS[i]
    args[2 * i] = string.format('%.0f', cur[i])
  end
  redis.call('HSET', S, unpack(args))
end
-- Take reservation rid off the books (cur: the loaded state); true if it was booked.
local function unbook(cur, rid)
  local v = redis.call('HGET', R, rid)
  if not v then return false end
  local i = 7
  for n in string.gmatch(v, '[^,]+') do
    cur[i] = cur[i] - tonumber(n)
    i = i + 1
  end
  redis.call('HDEL', R, rid)
  redis.call('ZREM', E, rid)
  return true
end
local function expire(cur, now)
  local stale = redis.call('ZRANGEBYSCORE', E, '-inf', now, 'LIMIT', 0, 1000)
  for _, rid in ipairs(stale) do
    if not unbook(cur, rid) then redis.call('ZREM', E, rid) end
  end
  return #stale > 0
end
"""

# ARGV: rid, ttl_ms, limits x6, request x6.
# Returns {-1} when booked, else {index of the violated dimension, used x6, reserved x6}.
_RESERVE = (
    _LIB
    + """
local now = now_ms()
local cur = load()
local changed = expire(cur, now)
-- The same call reserving twice (two handlers seeing one run) replaces its booking:
-- it is checked against what the other calls reserved.
local prev = {0, 0, 0, 0, 0, 0}
local booked = redis.call('HGET', R, ARGV[1])
if booked then
  local j = 1
  for x in string.gmatch(booked, '[^,]+') do prev[j] = tonumber(x); j = j + 1 end
end
for i = 1, 6 do
  local lim = tonumber(ARGV[2 + i])
  local req = tonumber(ARGV[8 + i])
  if lim >= 0 and req > 0 and cur[i] + cur[6 + i] - prev[i] + req > lim then
    if changed then save(cur) end
    local out = {i - 1}
    for j = 1, 6 do out[j + 1] = string.format('%.0f', cur[j]) end
    for j = 1, 6 do out[j + 7] = string.format('%.0f', cur[6 + j] - prev[j]) end
    return out
  end
end
unbook(cur, ARGV[1])
for i = 1, 6 do cur[6 + i] = cur[6 + i] + tonumber(ARGV[8 + i]) end
save(cur)
redis.call('HSET', R, ARGV[1], table.concat(ARGV, ',', 9, 14))
redis.call('ZADD', E, now + tonumber(ARGV[2]), ARGV[1])
return {-1}
"""
)

# ARGV: rid ('' for none), actual x6.
_SETTLE = (
    _LIB
    + """
local cur = load()
if ARGV[1] ~= '' then unbook(cur, ARGV[1]) end
for i = 1, 6 do cur[i] = cur[i] + tonumber(ARGV[1 + i]) end
save(cur)
return 1
"""
)

# ARGV: rid.
_RELEASE = (
    _LIB
    + """
local cur = load()
if unbook(cur, ARGV[1]) then save(cur) end
return 1
"""
)

# Returns used x6, reserved x6 (after expiring stale reservations).
_USAGE = (
    _LIB
    + """
local cur = load()
if expire(cur, now_ms()) then save(cur) end
local out = {}
for i = 1, 12 do out[i] = string.format('%.0f', cur[i]) end
return out
"""
)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _describe(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


class RedisBudgetStore:
    """A :class:`~agentmeter.BudgetStore` in Redis, shared by every process that uses it.

    Args:
        redis_client_or_url: A ``redis.Redis`` client, or a URL (``redis://host:6379/0``,
            ``rediss://...``, ``unix:///path.sock``). A client built from a URL uses
            short timeouts (``socket_timeout_s``) and two quick retries so an outage
            is reported in well under a second, not after minutes.
        prefix: Prefix of every Redis key (several apps can share one Redis).
        reservation_ttl_s: A reservation not settled or released within this many
            seconds stops counting (its process died, or a stream was never closed).
        socket_timeout_s: Connect / read timeout for a client built from a URL.
        max_backlog: Settlements kept while Redis is unreachable (see the module doc).

    Raises:
        BudgetStoreUnavailable: from :meth:`reserve` and :meth:`usage` while Redis
            cannot be reached.
    """

    #: Several processes see this store's state (the tracker's ledger may use this to
    #: avoid dropping a shared session budget when one process closes the session).
    shared = True

    def __init__(
        self,
        redis_client_or_url: Any,
        *,
        prefix: str = "agentmeter:",
        reservation_ttl_s: float = 600.0,
        socket_timeout_s: float = 2.0,
        max_backlog: int = 100_000,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not reservation_ttl_s > 0:
            raise ValueError("reservation_ttl_s must be > 0")
        if isinstance(redis_client_or_url, str):
            self.url = mask_url(redis_client_or_url)
            self._client: Any = redis.Redis.from_url(
                redis_client_or_url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 2),
            )
        elif callable(getattr(redis_client_or_url, "register_script", None)):
            self._client = redis_client_or_url
            self.url = _describe(redis_client_or_url)
        else:
            raise TypeError(
                "redis_client_or_url must be a redis URL or a redis.Redis client, "
                f"got {type(redis_client_or_url).__name__}"
            )
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self._ttl_ms = str(max(1, round(reservation_ttl_s * 1000)))
        # Registered once; each call runs EVALSHA (and loads the script if Redis lost it).
        register = self._client.register_script
        self._reserve = register(_RESERVE)
        self._settle = register(_SETTLE)
        self._release = register(_RELEASE)
        self._usage = register(_USAGE)
        self._backlog: deque[tuple[str, tuple[str, ...]]] = deque()
        self._backlog_lock = threading.Lock()
        self._max_backlog = max_backlog
        self._outage_logged = False

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client in use."""
        return self._client

    def _keys(self, key: str) -> list[str]:
        # The braces make a Redis Cluster hash tag: a budget's three keys share a slot.
        base = f"{self.prefix}{{{key}}}"
        return [f"{base}:s", f"{base}:r", f"{base}:e"]

    # ------------------------------------------------------------- protocol
    def reserve(
        self, key: str, owner: str, limits: Spend, request: Spend, reservation_id: str
    ) -> None:
        """Book ``request`` if it fits every limit, else raise ``BudgetExceeded``."""
        args = [reservation_id, self._ttl_ms, *map(str, limits), *map(str, request)]
        out = self._run("reserve", self._reserve, self._keys(key), args)
        i = int(out[0])
        if i >= 0:
            used = Spend(*(int(v) for v in out[1:7]))
            reserved = Spend(*(int(v) for v in out[7:13]))
            raise exceeded(owner, i, limits, used, reserved, request)

    def settle(self, key: str, reservation_id: str | None, actual: Spend) -> None:
        """Replace a reservation (or nothing) with the spend that really happened."""
        self._later_ok("settle", key, (reservation_id or "", *map(str, actual)))

    def release(self, key: str, reservation_id: str) -> None:
        """Drop a reservation whose call was never made."""
        self._later_ok("release", key, (reservation_id,))

    def usage(self, key: str) -> tuple[Spend, Spend]:
        """``(used, reserved)`` for a key, across every process."""
        out = self._run("usage", self._usage, self._keys(key), [])
        return Spend(*(int(v) for v in out[:6])), Spend(*(int(v) for v in out[6:12]))

    def drop(self, key: str) -> None:
        """Delete a key's state. For a session this resets the *shared* budget for every
        process: close a session once, where it really ends."""
        self._later_ok("drop", key, ())

    # ------------------------------------------------------------ internals
    def _run(self, operation: str, script: Any, keys: list[str], args: Sequence[str]) -> Any:
        if self._backlog:
            self._replay()
        try:
            return script(keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise BudgetStoreUnavailable(self.url, operation, exc) from exc

    def _apply(self, operation: str, key: str, args: tuple[str, ...]) -> None:
        keys = self._keys(key)
        if operation == "settle":
            self._settle(keys=keys, args=args)
        elif operation == "release":
            self._release(keys=keys, args=args)
        else:
            self._client.delete(*keys)

    def _later_ok(self, operation: str, key: str, args: tuple[str, ...]) -> None:
        """Apply now, or keep for replay if Redis is unreachable (spend must not vanish)."""
        if self._backlog:
            self._replay()
            if self._backlog:  # still down: keep the order, queue behind the rest
                self._defer(operation, key, args, None)
                return
        try:
            self._apply(operation, key, args)
        except _UNREACHABLE as exc:
            self._defer(operation, key, args, exc)

    def _defer(
        self, operation: str, key: str, args: tuple[str, ...], exc: BaseException | None
    ) -> None:
        with self._backlog_lock:
            self._backlog.append((key, (operation, *args)))
            lost = 0
            while len(self._backlog) > self._max_backlog:
                self._backlog.popleft()
                lost += 1
            first = not self._outage_logged
            self._outage_logged = True
        if first:
            logger.warning(
                "agentmeter: budget store at %s is unreachable (%s); settlements are kept "
                "in memory and replayed when it is back",
                self.url,
                exc,
            )
        if lost:
            logger.error(
                "agentmeter: budget store at %s still unreachable: %d settlement(s) dropped "
                "(backlog full, max_backlog=%d)",
                self.url,
                lost,
                self._max_backlog,
            )

    def _replay(self) -> None:
        """Send the backlog in order; stop at the first failure (Redis still down)."""
        with self._backlog_lock:
            done = 0
            while self._backlog:
                key, (operation, *args) = self._backlog[0]
                try:
                    self._apply(operation, key, tuple(args))
                except _UNREACHABLE:
                    return
                self._backlog.popleft()
                done += 1
            if self._outage_logged:
                self._outage_logged = False
                logger.warning(
                    "agentmeter: budget store at %s is reachable again; %d deferred "
                    "settlement(s) replayed",
                    self.url,
                    done,
                )

    @property
    def backlog(self) -> int:
        """Settlements waiting for Redis to come back."""
        return len(self._backlog)

    def close(self) -> None:
        """Close the client's connections (a client passed in is closed too)."""
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisBudgetStore {self.url} prefix={self.prefix!r}>"
