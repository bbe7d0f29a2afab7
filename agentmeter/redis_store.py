"""A :class:`~agentmeter.BudgetStore` in Redis: one budget shared by many processes.

::

    from agentmeter.redis_store import RedisBudgetStore

    tracker = agentmeter.Tracker(budget_store=RedisBudgetStore("redis://budget-host:6379/0"))
    tracker.set_budget("customer-42", agentmeter.Budget(max_cost_usd=5))

Every operation is one server-side Lua script (loaded once, run by SHA), so a
reservation is checked against ``used + reserved + requested`` and booked in one
atomic step: N processes sharing a budget cannot jointly overshoot it by more than
what calls already in flight spend beyond their reservations.

Layout per budget key ``K`` (all in one hash slot, so Redis Cluster works too):

- ``{prefix}{K}:s`` -- hash ``u1..u6`` (used) and ``r1..r6`` (reserved), integers in
  the order of :class:`~agentmeter.budget.Spend` (cost in micro-USD; exact below
  2**53, i.e. 9e15 tokens or 9 billion dollars);
- ``{prefix}{K}:r`` -- hash ``reservation id -> "t,i,o,c,l,x"`` (what it booked);
- ``{prefix}{K}:e`` -- sorted set ``reservation id -> deadline`` (server clock, ms);
- ``{prefix}{K}:q`` -- hash ``store instance -> last applied sequence number`` (see
  *Settling off the recording thread*);
- ``{prefix}{K}:a`` -- hash ``"<limit>:<threshold>" -> the settle that fired it`` (see
  *Alerts*).

A reservation not settled or released before its deadline (its process crashed)
is subtracted from ``reserved`` by the next script that touches the key (a range
query on the sorted set: O(log n) per operation, never a scan of the outstanding
reservations), so a dead process never holds budget longer than
``reservation_ttl_s``.

**Periods.** A periodic budget's key carries its period start (``customer:acme|
2026-12-01T00:00:00+00:00``), so every process computes the same key from its clock
and a new period is a new key. ``reserve`` and ``settle`` take ``expires_at`` (Unix
seconds, the period's end plus a margin): the script that writes a key also sets
``EXPIREAT`` on its four Redis keys, atomically with the write, so a finished
period's state disappears by itself. (An ``expires_at`` already in the past by the
server's clock -- a skewed or injected clock -- keeps the key at least an hour
past its last write rather than deleting what was just written.)

**Deadline.** Every network operation has one deadline, ``timeout_s`` (0.25 s by
default): a client built from a URL uses it as its connect and read timeout, with
no retry. :meth:`~RedisBudgetStore.reserve` (what ``check_budget`` calls before a
call) and :meth:`~RedisBudgetStore.usage` therefore fail closed within it when Redis
hangs (a stopped server, a network black hole) or refuses: they raise
:class:`BudgetStoreUnavailable`, which names the server (password masked), and the
call is not made. (A client passed in keeps its own timeouts: give it
``socket_timeout`` / ``socket_connect_timeout``.)

**Settling off the recording thread.** :meth:`~RedisBudgetStore.settle`,
:meth:`~RedisBudgetStore.release` and :meth:`~RedisBudgetStore.drop` describe
spending that already happened; they never touch the network on the caller's
thread. They are queued (a few microseconds) and a background thread sends them in
order, batched in pipelines. While Redis is unreachable they stay queued (a warning
is logged once per outage) and are replayed, in order, when it answers again --
with exponential backoff and jitter between attempts, never a retry storm. A
``reserve`` or ``usage`` on a key first sends the key's operations its own thread
queued, in the same pipeline, so a thread always reads its own writes (other threads
and processes see them once sent: a few milliseconds later). A thread never waits
for another thread's queue.

Replays are idempotent: each queued operation carries a random token of the thread
that queued it (per store instance) and a sequence number, and the script applies
it only if that number is above the last one it applied for the token on that key
(one small hash field per thread and key, not one entry per call). An operation
whose reply was lost (a timeout after Redis had already run it) is therefore counted
exactly once when it is sent again. A reserve whose reply was lost may also run
late (a stopped server runs what its socket buffered when it resumes): the store
queues a ``cancel`` behind it, which gives such a booking back, or makes a reserve
that arrives after it book nothing. The queue is bounded (``max_queue``): past it
the oldest operations are dropped, counted in :attr:`~RedisBudgetStore.stats` and
logged as errors -- never lost silently. At interpreter exit the queue is flushed
for up to ``exit_flush_s``.

**Alerts.** A budget's ``alert_at`` thresholds fire once per period for all the
processes sharing the store, not once per process: a settle carries the thresholds
its tracker has not seen fire, and the script claims each one the key's *total*
used amount reached (``HSETNX``, atomically with the settle), so exactly one settle
among every process wins it. The winner's tracker delivers the alert -- from the
thread that sent the settle (the background thread, or a ``reserve`` that carried
it), never blocking the recording thread. A threshold's claim expires with its
period; a dropped key (a closed session) forgets its claims. A settle whose reply
was lost and is replayed still delivers what it won (the claim names it).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "agentmeter.redis_store needs redis-py: pip install 'agentmeter-core[redis]'"
    ) from exc

from .budget import AlertsWon, Spend, exceeded
from .errors import BudgetStoreUnavailable

__all__ = ["BudgetStoreUnavailable", "RedisBudgetStore"]

logger = logging.getLogger("agentmeter")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# One script for every operation (ARGV[1] names it), so a pipeline of queued
# operations either finds the script cached or fails NOSCRIPT as a whole -- a
# later operation can never be applied while an earlier one was not, which the
# sequence-number deduplication relies on.
#
# Amounts are integers kept exact as Lua doubles (below 2**53: 9e15 tokens or
# micro-USD) and written back with "%.0f", never in exponent notation.
_SCRIPT = """
local S, R, E, Q, AL = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local A = ARGV
local FIELDS = {'u1','u2','u3','u4','u5','u6','r1','r2','r3','r4','r5','r6'}
local MIN_KEEP_S = 3600
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
-- Stale reservations: a range query on the deadlines, O(log n + expired).
local function expire(cur, now)
  local stale = redis.call('ZRANGEBYSCORE', E, '-inf', now, 'LIMIT', 0, 1000)
  for _, rid in ipairs(stale) do
    if not unbook(cur, rid) then redis.call('ZREM', E, rid) end
  end
  return #stale > 0
end
-- The key may be forgotten after exp (Unix seconds; '' = never).
local function keep_until(exp, now)
  if exp == '' then return end
  local at = math.max(math.ceil(tonumber(exp)), math.floor(now / 1000) + MIN_KEEP_S)
  for _, k in ipairs(KEYS) do redis.call('EXPIREAT', k, at) end
end

local op = A[1]
if op == 'reserve' then
  -- A: op, rid, ttl_ms, exp, token, seq, limits x6, request x6.
  -- Returns {-1, used x6} when booked, {-2} when stale (its caller gave up on it: see
  -- 'cancel'), else {index of the violated dimension, used x6, reserved x6}.
  if tonumber(A[6]) <= tonumber(redis.call('HGET', Q, 'c:' .. A[5]) or '0') then
    return {-2}
  end
  local now = now_ms()
  local cur = load()
  local changed = expire(cur, now)
  -- The same call reserving twice (two handlers seeing one run) replaces its booking:
  -- it is checked against what the other calls reserved.
  local prev = {0, 0, 0, 0, 0, 0}
  local booked = redis.call('HGET', R, A[2])
  if booked then
    local j = 1
    for x in string.gmatch(booked, '[^,]+') do prev[j] = tonumber(x); j = j + 1 end
  end
  for i = 1, 6 do
    local lim = tonumber(A[6 + i])
    local req = tonumber(A[12 + i])
    if lim >= 0 and req > 0 and cur[i] + cur[6 + i] - prev[i] + req > lim then
      if changed then save(cur) end
      local out = {i - 1}
      for j = 1, 6 do out[j + 1] = string.format('%.0f', cur[j]) end
      for j = 1, 6 do out[j + 7] = string.format('%.0f', cur[6 + j] - prev[j]) end
      return out
    end
  end
  unbook(cur, A[2])
  for i = 1, 6 do cur[6 + i] = cur[6 + i] + tonumber(A[12 + i]) end
  save(cur)
  redis.call('HSET', R, A[2], table.concat(A, ',', 13, 18))
  redis.call('ZADD', E, now + tonumber(A[3]), A[2])
  keep_until(A[4], now)
  local out = {-1}
  for j = 1, 6 do out[j + 1] = string.format('%.0f', cur[j]) end
  return out
elseif op == 'usage' then
  -- Returns used x6, reserved x6 (after expiring stale reservations).
  local cur = load()
  if expire(cur, now_ms()) then save(cur) end
  local out = {}
  for i = 1, 12 do out[i] = string.format('%.0f', cur[i]) end
  return out
end

-- A queued operation. A: op ('settle' | 'release' | 'cancel' | 'drop'), token, seq,
-- rid, exp (for 'cancel': the seq of the reserve it cancels), actual x6 (settle),
-- then (settle) alert thresholds as pairs: field ('<limit index>:<fraction>'), the
-- used amount at which it fires. A threshold the settled used amount reached is
-- claimed with HSETNX in AL, so among every process sharing the key exactly one
-- settle fires it; the claim holds the token and seq of the settle that won it.
-- Applied only if seq is above the token's last one on this key: a replay of an
-- operation that already ran is a no-op. Returns {0} for a replay (or {0, used x6,
-- fields...} when the replayed settle had won thresholds: its first reply was
-- lost), {1} for a drop, else {1, used x6, fields claimed...} (the key's used
-- amounts after it, and the thresholds this settle won).
local seq = tonumber(A[3])
local last = tonumber(redis.call('HGET', Q, A[2]) or '0')
local mine = A[2] .. ':' .. A[3]
if seq <= last then
  if op ~= 'settle' or #A < 13 then return {0} end
  local out = {0}
  for i = 12, #A - 1, 2 do
    if redis.call('HGET', AL, A[i]) == mine then out[#out + 1] = A[i] end
  end
  if #out == 1 then return {0} end
  local cur = load()
  local res = {0}
  for i = 1, 6 do res[i + 1] = string.format('%.0f', cur[i]) end
  for i = 2, #out do res[#res + 1] = out[i] end
  return res
end
if op == 'drop' then
  redis.call('DEL', S, R, E, AL)
  redis.call('HSET', Q, A[2], A[3])
  -- Keep the replay guard a day past the drop, then let it go too.
  redis.call('EXPIRE', Q, 86400)
  return {1}
end
local cur = load()
local won = {}
if op == 'settle' then
  if A[4] ~= '' then unbook(cur, A[4]) end
  for i = 1, 6 do cur[i] = cur[i] + tonumber(A[5 + i]) end
  save(cur)
  -- Before keep_until, so that a new claims hash gets the key's expiry too.
  for i = 12, #A - 1, 2 do
    local dim = tonumber(string.match(A[i], '^(%d+):')) + 1
    if cur[dim] >= tonumber(A[i + 1]) and redis.call('HSETNX', AL, A[i], mine) == 1 then
      won[#won + 1] = A[i]
    end
  end
elseif unbook(cur, A[4]) then
  save(cur)
end
redis.call('HSET', Q, A[2], A[3])
if op == 'cancel' then
  -- A reserve whose reply was lost (a timeout) may still be sitting in a socket
  -- buffer: whatever reserve of this token with a seq up to A[5] arrives later is
  -- stale and books nothing.
  local floor = tonumber(redis.call('HGET', Q, 'c:' .. A[2]) or '0')
  if tonumber(A[5]) > floor then redis.call('HSET', Q, 'c:' .. A[2], A[5]) end
else
  keep_until(A[5], now_ms())
end
local out = {1}
for i = 1, 6 do out[i + 1] = string.format('%.0f', cur[i]) end
for i = 1, #won do out[i + 7] = won[i] end
return out
"""

_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
_NKEYS = 5  # Redis keys per budget key (see _keys)
_SEND_BATCH = 256  # queued operations per pipeline sent by the background thread
_MAX_CATCH_UP = 512  # queued operations of one key a reserve may send before its own
_LINGER_S = 0.005
_KNOWN_MAX = 65_536  # keys whose last reported usage is remembered (for settle's answer)
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 1.0


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


def _exp(expires_at: float | None) -> str:
    if expires_at is None:
        return ""
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise TypeError(f"expires_at must be Unix seconds or None, got {expires_at!r}")
    if not math.isfinite(expires_at):
        raise ValueError(f"expires_at must be finite, got {expires_at!r}")
    return repr(float(expires_at))


ZERO = Spend()


def _add(a: Spend, b: Spend) -> Spend:
    return Spend(*(x + y for x, y in zip(a, b, strict=True)))


def _sub(a: Spend, b: Spend) -> Spend:
    return Spend(*(x - y for x, y in zip(a, b, strict=True)))


class _Op:
    """One queued settle / release / cancel / drop."""

    __slots__ = ("args", "deliver", "done", "key", "lane", "seq", "spend", "t")

    def __init__(
        self,
        key: str,
        lane: tuple[str, str],
        seq: int,
        args: tuple[str, ...],
        spend: Spend | None,
        deliver: AlertsWon | None = None,
    ) -> None:
        self.t = time.monotonic()
        self.key = key
        self.lane = lane  # (key, token of the thread that queued it)
        self.seq = seq
        self.args = args  # ARGV of the script
        self.spend = spend  # a settle's actual spend
        self.deliver = deliver  # a settle carrying alert thresholds: who gets what it won
        self.done = False


_LIVE: weakref.WeakSet[RedisBudgetStore] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_LIVE):
        store._forked()


def _at_exit() -> None:
    for store in list(_LIVE):
        store._exit_flush()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_at_exit)


class RedisBudgetStore:
    """A :class:`~agentmeter.BudgetStore` in Redis, shared by every process that uses it.

    Args:
        redis_client_or_url: A ``redis.Redis`` client, or a URL (``redis://host:6379/0``,
            ``rediss://...``, ``unix:///path.sock``). A client built from a URL uses
            ``timeout_s`` as its connect and read timeout and never retries on its
            own; a client passed in keeps its own timeouts.
        prefix: Prefix of every Redis key (several apps can share one Redis).
        reservation_ttl_s: A reservation not settled or released within this many
            seconds stops counting (its process died, or a stream was never closed).
        timeout_s: The per-operation deadline: ``reserve`` and ``usage`` raise
            :class:`BudgetStoreUnavailable` after at most about this long when Redis
            does not answer. Every answer slower than this refuses a call (fail
            closed): raise it where Redis or the host is heavily loaded.
        max_queue: Settlements kept while Redis is unreachable; past it the oldest
            are dropped (counted in :attr:`stats`, logged as errors).
        exit_flush_s: How long interpreter exit waits for queued settlements.
        socket_timeout_s: Former name of ``timeout_s`` (kept for compatibility).
        max_backlog: Former name of ``max_queue`` (kept for compatibility).

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
        timeout_s: float = 0.25,
        max_queue: int = 100_000,
        exit_flush_s: float = 2.0,
        socket_timeout_s: float | None = None,
        max_backlog: int | None = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not reservation_ttl_s > 0:
            raise ValueError("reservation_ttl_s must be > 0")
        if socket_timeout_s is not None:
            timeout_s = socket_timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise TypeError(f"timeout_s must be a number of seconds, got {timeout_s!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if max_backlog is not None:
            max_queue = max_backlog
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        if isinstance(redis_client_or_url, str):
            self.url = mask_url(redis_client_or_url)
            self._client: Any = redis.Redis.from_url(
                redis_client_or_url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # One attempt per operation: the background thread retries with
                # backoff; a reserve fails closed instead of multiplying the deadline.
                retry=Retry(NoBackoff(), 0),
            )
        elif callable(getattr(redis_client_or_url, "evalsha", None)):
            self._client = redis_client_or_url
            self.url = _describe(redis_client_or_url)
        else:
            raise TypeError(
                "redis_client_or_url must be a redis URL or a redis.Redis client, "
                f"got {type(redis_client_or_url).__name__}"
            )
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self.timeout_s = float(timeout_s)
        self.exit_flush_s = exit_flush_s
        self._ttl_ms = str(max(1, round(reservation_ttl_s * 1000)))
        self._sha = _SHA
        self._max_queue = max_queue
        self._init_queue()
        _LIVE.add(self)

    def _init_queue(self) -> None:
        # The token names this store instance in the replay guard; a forked child
        # draws its own (its sequence numbers would otherwise collide with the parent's).
        self._token = os.urandom(8).hex()  # namespaces reservation ids
        self._local = threading.local()  # each thread's own sequence token
        self._seq = 0
        self._lock = threading.Lock()
        self._order: deque[_Op] = deque()  # every queued op, oldest first (some done)
        # The live ops of each lane (key, thread token), in order.
        self._by_key: dict[tuple[str, str], deque[_Op]] = {}
        self._live = 0
        self._known: dict[str, Spend] = {}  # key -> used, as Redis last reported it
        self._queued_spend: dict[str, Spend] = {}  # key -> sum of its queued settles
        self._sending: dict[tuple[str, str], int] = {}  # lane -> senders with its ops in flight
        self._sent = threading.Condition(self._lock)  # notified when a key is unclaimed
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._down_since: float | None = None
        self._stats = {
            "queued": 0,
            "applied": 0,
            "replays_ignored": 0,
            "dropped": 0,
            "failed": 0,
            "outages": 0,
        }

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client in use."""
        return self._client

    def _keys(self, key: str) -> list[str]:
        # The braces make a Redis Cluster hash tag: a budget's keys share a slot.
        base = f"{self.prefix}{{{key}}}"
        return [f"{base}:s", f"{base}:r", f"{base}:e", f"{base}:q", f"{base}:a"]

    def _thread_token(self) -> str:
        """This thread's token in the replay guard: its operations form one sequence.

        Per thread, so a reserve only waits for (and sends) the queued operations of
        its own thread, never for the other threads' of the process.
        """
        token: str | None = getattr(self._local, "token", None)
        if token is None:
            token = self._local.token = os.urandom(8).hex()
        return token

    def _rid(self, reservation_id: str) -> str:
        # Namespaced per store instance: two processes using the same call id (a
        # user's "c1") never take each other's bookings.
        return f"{self._token}:{reservation_id}"

    # ------------------------------------------------------------- protocol
    def reserve(
        self,
        key: str,
        owner: str,
        limits: Spend,
        request: Spend,
        reservation_id: str,
        *,
        expires_at: float | None = None,
    ) -> None:
        """Book ``request`` if it fits every limit, else raise ``BudgetExceeded``.

        Raises:
            BudgetStoreUnavailable: Redis did not answer within ``timeout_s``.
        """
        rid = self._rid(reservation_id)
        exp = _exp(expires_at)
        tail = (*map(str, limits), *map(str, request))
        token = self._thread_token()
        for attempt in (0, 1):
            lane = (key, token)
            ops, seq = self._snapshot(lane)
            args = ("reserve", rid, self._ttl_ms, exp, token, str(seq), *tail)
            try:
                out = self._call("reserve", lane, ops, args)
            except BudgetStoreUnavailable as exc:
                if isinstance(exc.__cause__, _UNREACHABLE):
                    # It may still run when Redis wakes up: make sure it books nothing.
                    self._enqueue(key, ("cancel", rid, str(seq)))
                raise
            i = int(out[0])
            if i != -2:
                with self._lock:  # what settle() answers builds on the latest state seen
                    self._learn(key, out[1:7])
            if i == -2 and not attempt:
                continue  # raced a cancel of an older attempt: once more, with a new seq
            if i == -2:
                raise BudgetStoreUnavailable(
                    self.url, "reserve", RedisConnectionError("reservation kept going stale")
                )
            if i >= 0:
                used = Spend(*(int(v) for v in out[1:7]))
                reserved = Spend(*(int(v) for v in out[7:13]))
                raise exceeded(owner, i, limits, used, reserved, request)
            return

    def settle(
        self,
        key: str,
        reservation_id: str | None,
        actual: Spend,
        *,
        expires_at: float | None = None,
    ) -> Spend:
        """Replace a reservation (or nothing) with the spend that really happened.

        Queued and sent by a background thread: never waits for the network.

        Returns:
            The key's used amounts as this process knows them without asking Redis
            (the last state Redis reported, plus this process's queued settlements):
            what the tracker's alert thresholds are checked against.
        """
        rid = "" if reservation_id is None else self._rid(reservation_id)
        return self._enqueue(key, ("settle", rid, _exp(expires_at), *map(str, actual)), actual)

    def settle_claiming_alerts(
        self,
        key: str,
        reservation_id: str | None,
        actual: Spend,
        thresholds: Sequence[tuple[str, int]],
        deliver: AlertsWon,
        *,
        expires_at: float | None = None,
    ) -> None:
        """:meth:`settle`, and claim the alert thresholds it makes the key reach.

        ``thresholds`` are ``(name, amount)`` pairs -- ``name`` is ``"<index of the
        limit in Spend>:<fraction>"``, ``amount`` the used amount at which it fires.
        The script claims each one the key's used amount (every process's spend)
        reached, atomically with the settle; of all the processes sharing the key,
        exactly one settle wins a threshold. ``deliver(won, used)`` is called once,
        with the names this settle won and the key's used amounts after it, when
        Redis answered -- on the thread that sent it, outside the store's lock; never
        when it won nothing.
        """
        rid = "" if reservation_id is None else self._rid(reservation_id)
        args = ["settle", rid, _exp(expires_at), *map(str, actual)]
        for name, amount in thresholds:
            args += (name, str(amount))
        self._enqueue(key, tuple(args), actual, deliver)

    def release(self, key: str, reservation_id: str) -> None:
        """Drop a reservation whose call was never made (queued, like :meth:`settle`)."""
        self._enqueue(key, ("release", self._rid(reservation_id), ""))

    def usage(self, key: str) -> tuple[Spend, Spend]:
        """``(used, reserved)`` for a key, across every process (this one's queued
        settlements included).

        Raises:
            BudgetStoreUnavailable: Redis did not answer within ``timeout_s``.
        """
        lane = (key, self._thread_token())
        out = self._call("usage", lane, self._snapshot(lane)[0], ("usage",))
        with self._lock:
            self._learn(key, out[:6])
        return Spend(*(int(v) for v in out[:6])), Spend(*(int(v) for v in out[6:12]))

    def drop(self, key: str) -> None:
        """Delete a key's state (queued, like :meth:`settle`). For a session this
        resets the *shared* budget for every process: close a session once, where
        it really ends."""
        self._enqueue(key, ("drop", "", ""))
        with self._lock:
            self._known.pop(key, None)

    # --------------------------------------------------------------- the queue
    def _enqueue(
        self,
        key: str,
        args: tuple[str, ...],
        spend: Spend | None = None,
        deliver: AlertsWon | None = None,
    ) -> Spend:
        """Queue one operation; returns the key's used amounts as far as this process
        knows them (the last state Redis reported plus what is queued), no network."""
        lost = 0
        token = self._thread_token()
        lane = (key, token)
        with self._lock:
            self._seq += 1
            argv = (args[0], token, str(self._seq), *args[1:])
            op = _Op(key, lane, self._seq, argv, spend, deliver)
            self._order.append(op)
            queued = self._queued_spend.get(key, ZERO)
            if spend is not None:
                queued = self._queued_spend[key] = _add(queued, spend)
            estimate = _add(self._known.get(key, ZERO), queued)
            dq = self._by_key.get(lane)
            if dq is None:
                dq = self._by_key[lane] = deque()
            dq.append(op)
            self._live += 1
            self._stats["queued"] += 1
            while self._live > self._max_queue:
                self._drop_oldest()
                lost += 1
            if self._thread is None and not self._closed:
                self._start_thread()
        if not self._wake.is_set():
            self._wake.set()
        if lost:
            logger.error(
                "agentmeter: budget store at %s unreachable and its queue is full "
                "(max_queue=%d): %d settlement(s) dropped, %d so far",
                self.url,
                self._max_queue,
                lost,
                self._stats["dropped"],
            )
        return estimate

    def _learn(self, key: str, used: Sequence[Any]) -> None:
        """Remember the used amounts Redis reported for ``key`` (lock held)."""
        known = self._known
        if len(known) >= _KNOWN_MAX and key not in known:
            known.clear()  # an estimate for alerts: dropping it is harmless
        known[key] = Spend(*(int(v) for v in used))

    def _drop_oldest(self) -> None:
        # Called with the lock held and at least one live op queued.
        while self._order:
            op = self._order.popleft()
            if not op.done:
                self._finish(op)
                self._stats["dropped"] += 1
                return

    def _finish(self, op: _Op) -> None:
        """Take ``op`` and every earlier op of its lane off the queue (lock held)."""
        dq = self._by_key.get(op.lane)
        if dq is None:
            return
        while dq and dq[0].seq <= op.seq:
            first = dq.popleft()
            if not first.done:
                first.done = True
                self._live -= 1
                if first.spend is not None:
                    left = _sub(self._queued_spend.get(op.key, ZERO), first.spend)
                    if left == ZERO:
                        self._queued_spend.pop(op.key, None)
                    else:
                        self._queued_spend[op.key] = left
        if not dq:
            del self._by_key[op.lane]
        if self._live == 0:
            self._order.clear()
            self._idle.notify_all()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._drain_forever, name="agentmeter-redis-settle", daemon=True
        )
        self._thread = thread
        thread.start()

    def _drain_forever(self) -> None:
        failures = 0
        while True:
            self._wake.wait()
            batch: list[_Op] = []
            keys: list[tuple[str, str]] = []
            with self._lock:
                order = self._order
                while order and order[0].done:
                    order.popleft()
                # Leave fresh settlements a moment: under traffic the next reserve on
                # their key carries them in its own pipeline (no extra round trip),
                # and a burst goes out as one pipeline.
                wait = _LINGER_S - (time.monotonic() - order[0].t) if order else 0.0
                if wait <= 0 or self._closed:
                    batch, keys = self._next_batch()
                    if not batch:  # nothing, or only keys a reserve is sending
                        self._wake.clear()
                        if self._closed and not order:
                            return
                        continue
            if not batch:
                time.sleep(wait)
                continue
            try:
                self._send(batch, None)
            except _UNREACHABLE as exc:
                self._unclaim(keys)  # reserves may go ahead (and fail closed) meanwhile
                keys = []
                self._went_down(exc)
                failures += 1
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** min(failures, 10))
                # Full jitter: many processes coming back together do not stampede.
                time.sleep(random.uniform(delay / 2, delay))
                if self._closed and failures > 3:
                    return
                continue
            except Exception:  # a bug of ours: keep the thread alive, keep the ops
                self._unclaim(keys)
                keys = []
                logger.exception("agentmeter: budget store background send failed")
                time.sleep(_BACKOFF_CAP_S)
                continue
            finally:
                self._unclaim(keys)
            failures = 0

    def _next_batch(self) -> tuple[list[_Op], list[tuple[str, str]]]:
        """The oldest live ops in queue order, their lanes claimed (lock held).

        A lane is a key and the token of the thread that queued its ops: one sequence
        of sequence numbers. Lanes whose ops another sender (a reserve) has in flight
        are left to it. Two senders of one lane would still be correct -- each sends
        the lane's ops in order from the first unconfirmed one, and a copy that runs
        second is a replay -- but only load Redis twice.
        """
        order = self._order
        while order and order[0].done:
            order.popleft()
        sending = self._sending
        batch: list[_Op] = []
        for op in order:
            if not op.done and op.lane not in sending:
                batch.append(op)
                if len(batch) == _SEND_BATCH:
                    break
        lanes = list({op.lane: None for op in batch})
        for lane in lanes:
            sending[lane] = 1
        return batch, lanes

    def _unclaim(self, lanes: list[tuple[str, str]]) -> None:
        if not lanes:
            return
        with self._lock:
            sending = self._sending
            for lane in lanes:
                n = sending.pop(lane, 1) - 1
                if n > 0:
                    sending[lane] = n
            self._sent.notify_all()
            live = self._live
        if live:
            self._wake.set()

    # ----------------------------------------------------------- the network
    def _snapshot(self, lane: tuple[str, str]) -> tuple[list[_Op], int]:
        """The lane's queued operations (this thread's, on this key), claimed, and a
        sequence number after them.

        While another sender has them in flight, waits for it (up to the deadline,
        not at all while Redis is known to be down): this call then usually finds
        nothing left to send. Past that it sends them too.
        """
        with self._lock:
            if lane in self._sending and self._down_since is None:
                deadline = time.monotonic() + self.timeout_s
                while lane in self._sending and self._down_since is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._sent.wait(remaining)
            dq = self._by_key.get(lane)
            self._seq += 1
            if not dq:
                return [], self._seq
            self._sending[lane] = self._sending.get(lane, 0) + 1
            return list(dq), self._seq

    def _call(
        self, operation: str, lane: tuple[str, str], ops: list[_Op], args: Sequence[str]
    ) -> Any:
        """Run one script on the lane's key after the lane's queued ops, in one pipeline."""
        try:
            return self._call_after(operation, lane[0], ops, args)
        finally:
            if ops:
                self._unclaim([lane])

    def _call_after(self, operation: str, key: str, ops: list[_Op], args: Sequence[str]) -> Any:
        if len(ops) > _MAX_CATCH_UP:
            # Sending them all would blow the deadline; the background thread is
            # replaying them (an outage just ended). Fail closed until it caught up.
            raise BudgetStoreUnavailable(
                self.url,
                operation,
                RedisConnectionError(f"{len(ops)} deferred settlements still being replayed"),
            )
        try:
            return self._send(ops, (key, args))
        except _UNREACHABLE as exc:
            self._went_down(exc)
            raise BudgetStoreUnavailable(self.url, operation, exc) from exc
        except ResponseError as exc:
            raise BudgetStoreUnavailable(self.url, operation, exc) from exc

    def _send(self, ops: list[_Op], last: tuple[str, Sequence[str]] | None) -> Any:
        """Send ``ops`` (and ``last``) in one pipeline; confirm what ran. Returns
        ``last``'s reply; raises on a connection failure (nothing confirmed)."""
        for attempt in (0, 1):
            if not ops and last is not None:
                try:
                    reply = self._client.evalsha(self._sha, _NKEYS, *self._keys(last[0]), *last[1])
                except NoScriptError:
                    if attempt:
                        raise
                    self._client.script_load(_SCRIPT)
                    continue
                self._came_back()
                return reply
            pipe = self._client.pipeline(transaction=False)
            for op in ops:
                pipe.evalsha(self._sha, _NKEYS, *self._keys(op.key), *op.args)
            if last is not None:
                pipe.evalsha(self._sha, _NKEYS, *self._keys(last[0]), *last[1])
            replies = pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in replies):
                # Redis lost its script cache (a restart, SCRIPT FLUSH): only a suffix
                # of the pipeline can have failed; load it and send what is left.
                self._confirm(ops, replies)
                self._client.script_load(_SCRIPT)
                with self._lock:
                    ops = [op for op in ops if not op.done]
                if attempt:
                    raise NoScriptError("script not loaded")
                continue
            self._confirm(ops, replies)
            self._came_back()
            if last is None:
                return None
            reply = replies[-1]
            if isinstance(reply, Exception):
                raise reply
            return reply
        return None  # pragma: no cover - the loop returns or raises

    def _confirm(self, ops: list[_Op], replies: list[Any]) -> None:
        failed: list[tuple[_Op, Exception]] = []
        won: list[tuple[AlertsWon, list[str], Spend]] = []
        with self._lock:
            for op, reply in zip(ops, replies, strict=False):
                if isinstance(reply, NoScriptError):
                    continue
                if isinstance(reply, Exception):
                    failed.append((op, reply))
                    self._stats["failed"] += 1
                else:
                    if not reply or reply[0] == 0:
                        self._stats["replays_ignored"] += 1
                    else:
                        self._stats["applied"] += 1
                        if len(reply) >= 7:
                            self._learn(op.key, reply[1:7])
                    if len(reply) > 7 and op.deliver is not None and not op.done:
                        # The thresholds this settle won (or, replayed, had won).
                        names = [v.decode() if isinstance(v, bytes) else str(v) for v in reply[7:]]
                        won.append((op.deliver, names, Spend(*(int(v) for v in reply[1:7]))))
                if not op.done:
                    self._finish(op)
        for deliver, names, used in won:
            try:
                deliver(names, used)
            except Exception:  # a subscriber's bug must not stop the queue
                logger.exception("agentmeter: delivering budget alerts failed")
        for op, err in failed:
            # Redis refused it (out of memory, a read-only replica): it cannot be
            # retried in order without blocking every later operation.
            logger.error(
                "agentmeter: budget store at %s refused a %s of %r: %s (not counted)",
                self.url,
                op.args[0],
                op.key,
                err,
            )

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self._stats["outages"] += 1
            queued = self._live
        if first:
            logger.warning(
                "agentmeter: budget store at %s is unreachable (%s); budget checks fail "
                "closed, %d settlement(s) queued and replayed when it is back",
                self.url,
                exc,
                queued,
            )

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            queued = self._live
        if since is not None:
            logger.warning(
                "agentmeter: budget store at %s is reachable again after %.1f s; "
                "deferred settlements replayed (%d still queued)",
                self.url,
                time.monotonic() - since,
                queued,
            )

    # ---------------------------------------------------------------- control
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued settlement reached Redis; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._live:
                if self._thread is None:
                    self._start_thread()
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    @property
    def backlog(self) -> int:
        """Settlements queued (not yet confirmed by Redis)."""
        return self._live

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the settlement queue: ``queued``, ``applied``,
        ``replays_ignored`` (sent again after a lost reply, counted once),
        ``dropped`` (queue overflow), ``failed`` (refused by Redis), ``outages``,
        and ``backlog`` (waiting now)."""
        with self._lock:
            return {**self._stats, "backlog": self._live}

    def close(self, timeout: float | None = None) -> None:
        """Flush queued settlements (up to ``timeout``, default ``2 x timeout_s``),
        stop the background thread and close the client's connections (a client
        passed in is closed too)."""
        if not self.flush(2 * self.timeout_s if timeout is None else timeout):
            logger.error(
                "agentmeter: budget store at %s closed with %d settlement(s) not sent",
                self.url,
                self._live,
            )
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=2 * self.timeout_s + _BACKOFF_CAP_S)
        _LIVE.discard(self)
        self._client.close()

    def _forked(self) -> None:
        # The child inherits the queue but not the thread; its copies of the parent's
        # queued operations are the parent's to send.
        self._init_queue()

    def _exit_flush(self) -> None:
        if self._live and not self.flush(self.exit_flush_s):
            logger.error(
                "agentmeter: budget store at %s: %d settlement(s) not sent at exit",
                self.url,
                self._live,
            )

    def __repr__(self) -> str:
        return f"<RedisBudgetStore {self.url} prefix={self.prefix!r}>"
