"""Budget alerts (and, optionally, usage events) posted to a webhook, signed.

::

    from agentmeter.webhook import WebhookSink

    sink = WebhookSink("https://billing.example.com/hooks/agentmeter", secret=SECRET)
    tracker.add_sink(sink)   # every BudgetAlert is POSTed as JSON
    ...
    sink.close()             # at exit: flush what is queued (bounded), stop the thread

What is posted (``Content-Type: application/json``):

- an alert (``X-Agentmeter-Kind: alert``): the :class:`~agentmeter.BudgetAlert`'s JSON,
  one request per alert;
- with ``events=True``, usage events (``X-Agentmeter-Kind: usage_events``):
  ``{"events": [<UsageEvent JSON>, ...]}``, up to ``batch_size`` events a request.

Headers of every request:

- ``Idempotency-Key``: unique per delivery and the same on each retry of it. A retry
  after a timeout may reach the receiver twice (it got the first attempt but its
  answer was lost): deduplicate on this key to process each delivery exactly once.
- ``X-Agentmeter-Timestamp``: Unix seconds when this attempt was signed.
- ``X-Agentmeter-Signature``: ``sha256=<hex>``, the HMAC-SHA256 under ``secret`` of
  ``<timestamp>.<body>`` (the timestamp header's value, a dot, the exact body bytes).
  Signing the timestamp lets a receiver refuse replays of an old request: reject a
  timestamp older than a few minutes. :func:`verify_signature` does both checks.

Nothing of this runs on the recording thread: :meth:`WebhookSink.submit` and
:meth:`WebhookSink.alert` append to a bounded queue (past ``max_queue`` the new item
is dropped, counted in :attr:`WebhookSink.stats` and logged once per overflow) and a
background thread posts with ``httpx``. A failed attempt (connection error,
timeout, 408, 429 or 5xx) is retried up to ``max_retries`` times with exponential
backoff and full jitter (``backoff * 2**attempt`` seconds, at most ``max_backoff``;
a ``Retry-After`` header is honoured up to that cap); other 4xx answers are not
retried. A delivery that runs out of retries is counted as ``failed`` and logged.
Alerts go before queued events. A sink error never reaches the host program. At
interpreter exit, what is still queued gets up to ``exit_timeout_s`` to go out.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "agentmeter.webhook needs httpx: pip install 'agentmeter-core[webhook]'"
    ) from exc

from .models import RawEvent, UsageEvent

if TYPE_CHECKING:
    from .models import BudgetAlert

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSink",
    "sign",
    "verify_signature",
]

logger = logging.getLogger("agentmeter")

SIGNATURE_HEADER = "X-Agentmeter-Signature"
TIMESTAMP_HEADER = "X-Agentmeter-Timestamp"
KIND_HEADER = "X-Agentmeter-Kind"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_RETRY_STATUS = frozenset({408, 425, 429})

_OPEN: weakref.WeakSet[WebhookSink] = weakref.WeakSet()


def _at_exit() -> None:
    # Alerts are what someone is waiting for: give the queue a bounded last chance.
    for sink in list(_OPEN):
        if not sink._closed and sink.stats["queued"]:
            sink.close(timeout=sink.exit_timeout_s)


atexit.register(_at_exit)


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Agentmeter-Signature`` value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True if ``signature`` signs ``body`` at ``timestamp`` under ``secret`` and the
    timestamp is within ``tolerance_s`` of ``now`` (a replayed old request is refused).

    Args:
        secret: The sink's secret.
        body: The request body, exactly as received (bytes, not re-serialised JSON).
        timestamp: The ``X-Agentmeter-Timestamp`` header.
        signature: The ``X-Agentmeter-Signature`` header.
        tolerance_s: How old (or how far in the future) a timestamp may be.
        now: The receiver's clock (default ``time.time()``).
    """
    try:
        sent = float(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class _Delivery:
    __slots__ = ("attempts", "body", "key", "kind")

    def __init__(self, kind: str, body: bytes) -> None:
        self.kind = kind
        self.body = body
        self.key = os.urandom(16).hex()  # the idempotency key, kept across retries
        self.attempts = 0


class WebhookSink:
    """A tracker sink that POSTs budget alerts (and optionally usage events) as signed JSON.

    Args:
        url: Where to POST (``http://`` or ``https://``).
        secret: The HMAC-SHA256 key of the ``X-Agentmeter-Signature`` header (see the
            module doc). Required: an unsigned webhook cannot be trusted by its
            receiver.
        events: Also post every recorded call (batched ``UsageEvent`` JSON).
        timeout_s: Connect / read / write timeout of one attempt.
        max_retries: Attempts after the first before a delivery is given up.
        backoff: Base delay of the exponential backoff, in seconds.
        max_backoff: Cap of one delay between attempts, in seconds.
        max_queue: Alerts + events waiting; past it new ones are dropped (counted).
        batch_size: Usage events per request.
        flush_interval_s: How long events wait for a batch to fill.
        headers: Extra headers on every request (an ``Authorization`` for instance).
        exit_timeout_s: How long interpreter exit waits for what is still queued.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        events: bool = False,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_queue: int = 10_000,
        batch_size: int = 100,
        flush_interval_s: float = 1.0,
        headers: Mapping[str, str] | None = None,
        exit_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if not isinstance(secret, str | bytes) or not secret:
            raise TypeError("secret must be a non-empty str or bytes")
        for name, value in (
            ("timeout_s", timeout_s),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
            ("flush_interval_s", flush_interval_s),
            ("exit_timeout_s", exit_timeout_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not value >= 0 or (name == "timeout_s" and not value > 0):
                raise ValueError(f"{name} must be {'> 0' if name == 'timeout_s' else '>= 0'}")
        for name, count, low in (
            ("max_retries", max_retries, 0),
            ("max_queue", max_queue, 1),
            ("batch_size", batch_size, 1),
        ):
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"{name} must be an int, got {count!r}")
            if count < low:
                raise ValueError(f"{name} must be >= {low}, got {count}")
        self.url = url
        self.events = bool(events)
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval_s = float(flush_interval_s)
        self._secret = secret
        self._headers = dict(headers or {})
        self._alerts: deque[_Delivery] = deque()
        self._events: deque[RawEvent] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = False  # the thread holds a delivery
        self._closed = False
        self._overflowing = False
        self._thread: threading.Thread | None = None
        self._stats = {"sent": 0, "retried": 0, "failed": 0, "dropped": 0}
        self._client: httpx.Client | None = None
        self._deadline: float | None = None  # set by close(): retries stop then
        self.exit_timeout_s = float(exit_timeout_s)
        _OPEN.add(self)

    # ------------------------------------------------------------ sink protocol
    def submit(self, raw: RawEvent) -> None:
        """Take one recorded call (queued; only with ``events=True``)."""
        if not self.events or self._closed:
            return
        try:
            if len(self._alerts) + len(self._events) >= self.max_queue:
                self._overflow("usage event")
                return
            self._events.append(raw)
            if self._thread is None or len(self._events) >= self.batch_size:
                self._kick()
        except Exception:  # never into the host
            logger.exception("agentmeter: WebhookSink could not queue an event")

    def alert(self, alert: BudgetAlert) -> None:
        """Take one budget alert (queued, posted ahead of queued events)."""
        try:
            if self._closed:
                logger.warning("agentmeter: WebhookSink closed; alert not sent: %s", alert)
                return
            if len(self._alerts) + len(self._events) >= self.max_queue:
                self._overflow("alert")
                return
            self._alerts.append(_Delivery("alert", alert.model_dump_json().encode()))
            self._kick()
        except Exception:  # never into the host
            logger.exception("agentmeter: WebhookSink could not queue an alert")

    def _overflow(self, what: str) -> None:
        with self._lock:
            self._stats["dropped"] += 1
            first = not self._overflowing
            self._overflowing = True
        if first:
            logger.error(
                "agentmeter: WebhookSink queue full (max_queue=%d, %s not reachable or too "
                "slow): dropping new %ss and events until it drains (counted in stats)",
                self.max_queue,
                self.url,
                what,
            )

    def _kick(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(
                        target=self._run, name="agentmeter-webhook", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    # ----------------------------------------------------------- the thread
    def _run(self) -> None:
        self._client = httpx.Client(timeout=self.timeout_s)
        try:
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                while self._send_one():
                    pass
                with self._lock:
                    if self._closed and (self._closed_hard() or not (self._alerts or self._events)):
                        return
        finally:
            self._client.close()

    def _send_one(self) -> bool:
        """Deliver the next alert or event batch; False when nothing is queued."""
        try:
            delivery = self._next()
            if delivery is None:
                return False
            self._deliver(delivery)
        except Exception:  # a bug of ours: never into the host, keep the thread alive
            logger.exception("agentmeter: WebhookSink delivery failed")
            with self._lock:
                self._stats["failed"] += 1
        finally:
            with self._lock:
                self._busy = False
                self._idle.notify_all()
        return True

    def _next(self) -> _Delivery | None:
        with self._lock:
            if self._alerts:
                self._busy = True
                return self._alerts.popleft()
            if not self._events:
                if self._overflowing:
                    self._overflowing = False
                return None
            batch: list[RawEvent] = []
            while self._events and len(batch) < self.batch_size:
                batch.append(self._events.popleft())
            self._busy = True
        events = [UsageEvent.from_raw(raw).model_dump(mode="json") for raw in batch]
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        return _Delivery("usage_events", body)

    def _deliver(self, delivery: _Delivery) -> None:
        assert self._client is not None
        while True:
            timestamp = str(int(time.time()))
            headers = {
                **self._headers,
                "Content-Type": "application/json",
                "User-Agent": "agentmeter-webhook",
                KIND_HEADER: delivery.kind,
                IDEMPOTENCY_HEADER: delivery.key,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret, timestamp, delivery.body),
            }
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, content=delivery.body, headers=headers)
                status = response.status_code
                if status < 300:
                    with self._lock:
                        self._stats["sent"] += 1
                    return
                why = f"HTTP {status}"
                retryable = status >= 500 or status in _RETRY_STATUS
                retry_after = _retry_after(response.headers.get("Retry-After"))
            except httpx.HTTPError as exc:
                why, retryable = f"{type(exc).__name__}: {exc}", True
            delivery.attempts += 1
            if not retryable or delivery.attempts > self.max_retries or self._closed_hard():
                with self._lock:
                    self._stats["failed"] += 1
                logger.error(
                    "agentmeter: webhook %s: %s delivery %s given up after %d attempt(s): %s",
                    self.url,
                    delivery.kind,
                    delivery.key,
                    delivery.attempts,
                    why,
                )
                return
            with self._lock:
                self._stats["retried"] += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (delivery.attempts - 1))
            delay = random.uniform(0, delay)  # full jitter
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            self._sleep(delay)

    def _closed_hard(self) -> bool:
        # close() gave up waiting: stop retrying, let the thread end.
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._closed_hard():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    # ---------------------------------------------------------------- control
    @property
    def stats(self) -> dict[str, int]:
        """``sent``, ``retried`` (attempts repeated), ``failed`` (given up),
        ``dropped`` (queue full) and ``queued`` (waiting now)."""
        with self._lock:
            return {**self._stats, "queued": len(self._alerts) + len(self._events)}

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Post everything queued now; False if ``timeout`` seconds passed first
        (``None``: wait however long the retries take). ``tracker.flush()`` calls it
        with the default bound."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._alerts or self._events or self._busy:
                if self._thread is None:
                    if self._closed:
                        return False
                    self._lock.release()
                    try:
                        self._kick()
                    finally:
                        self._lock.acquire()
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop (what is left is logged)."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._deadline = time.monotonic()
            left = len(self._alerts) + len(self._events)
            thread = self._thread
        self._wake.set()
        _OPEN.discard(self)
        if thread is not None:
            thread.join(timeout=self.timeout_s + 1.0)
        if not flushed or left:
            logger.error(
                "agentmeter: WebhookSink closed with %d alert(s)/event(s) not delivered to %s",
                left,
                self.url,
            )

    def __repr__(self) -> str:
        return f"<WebhookSink {self.url} events={self.events}>"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare for webhooks, fall back to our backoff
    return seconds if seconds >= 0 else None
