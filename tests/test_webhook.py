"""WebhookSink against a real HTTP server on 127.0.0.1 that fails, hangs and recovers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("httpx", reason="needs the webhook extra")

import agentmeter
from agentmeter import Budget, BudgetAlert
from agentmeter.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    sign,
    verify_signature,
)

SECRET = "whsec-test-4f1c"
HOST_BOUND_S = 0.05  # what a call on the recording thread may take, on a loaded machine


class Receiver:
    """An HTTP endpoint whose behaviour the test switches: ok, fail (500), hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hang_s = 1.0
        self.requests: list[dict[str, Any]] = []  # every request that arrived
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mode = receiver.mode
                record = {"headers": dict(self.headers), "body": body, "mode": mode}
                with receiver.lock:
                    receiver.requests.append(record)
                if mode == "hang":
                    time.sleep(receiver.hang_s)  # past the client's timeout
                status = {"ok": 200, "fail": 500, "hang": 200, "bad": 400}[mode]
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up on us
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def delivered(self) -> dict[str, dict[str, Any]]:
        """Requests answered 2xx, deduplicated by idempotency key (what a receiver keeps)."""
        with self.lock:
            return {r["headers"]["Idempotency-Key"]: r for r in self.requests if r["mode"] == "ok"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def make_alert(n: int) -> BudgetAlert:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return BudgetAlert(
        owner="customer 'acme'",
        key={"customer_id": "acme"},
        limit="max_cost_usd",
        threshold=0.8,
        used=Decimal("16.000001") + n,
        limit_value=Decimal(20),
        period="month",
        period_start=start,
        resets_at=datetime(2027, 1, 1, tzinfo=UTC),
        at=datetime(2026, 12, 15, 12, 0, n % 60, tzinfo=UTC),
    )


def test_alert_is_posted_signed(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, secret=SECRET)
    alert = make_alert(1)
    sink.alert(alert)
    assert sink.flush(timeout=10)
    (req,) = receiver.requests
    h, body = req["headers"], req["body"]
    # The body is the BudgetAlert's JSON, and it round-trips.
    assert BudgetAlert.model_validate_json(body) == alert
    assert h["Content-Type"] == "application/json" and h["X-Agentmeter-Kind"] == "alert"
    assert h[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(SECRET, body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER])
    # Tampered body, wrong secret, replayed old request: all refused.
    assert not verify_signature(SECRET, body + b" ", h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER])
    assert not verify_signature("other", body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER])
    later = float(h[TIMESTAMP_HEADER]) + 301
    assert not verify_signature(SECRET, body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], now=later)
    assert not verify_signature(SECRET, body, "not-a-time", h[SIGNATURE_HEADER])
    # The scheme, recomputed independently of the sink.
    import hashlib
    import hmac

    expect = hmac.new(
        SECRET.encode(), h[TIMESTAMP_HEADER].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert h[SIGNATURE_HEADER] == f"sha256={expect}" == sign(SECRET, h[TIMESTAMP_HEADER], body)
    assert sink.stats == {"sent": 1, "retried": 0, "failed": 0, "dropped": 0, "queued": 0}
    sink.close()


@pytest.mark.timeout(90)
def test_fails_hangs_recovers_every_alert_exactly_once(receiver: Receiver) -> None:
    sink = WebhookSink(
        receiver.url,
        secret=SECRET,
        timeout_s=0.3,
        max_retries=200,
        backoff=0.02,
        max_backoff=0.2,
    )
    receiver.hang_s = 0.8
    alerts = [make_alert(n) for n in range(12)]
    worst = 0.0
    receiver.mode = "fail"
    for a in alerts[:4]:
        t0 = time.perf_counter()
        sink.alert(a)
        worst = max(worst, time.perf_counter() - t0)
    deadline = time.monotonic() + 20
    while sum(r["mode"] == "fail" for r in receiver.requests) < 6:  # retried with backoff
        assert time.monotonic() < deadline
        time.sleep(0.02)
    receiver.mode = "hang"
    for a in alerts[4:8]:
        t0 = time.perf_counter()
        sink.alert(a)
        worst = max(worst, time.perf_counter() - t0)
    deadline = time.monotonic() + 20
    while sum(r["mode"] == "hang" for r in receiver.requests) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sink.flush(timeout=0.2) is False  # still undelivered, and flush is bounded
    receiver.mode = "ok"
    for a in alerts[8:]:
        sink.alert(a)
    assert sink.flush(timeout=30)
    assert worst < HOST_BOUND_S, f"alert() blocked {worst * 1000:.1f} ms"

    delivered = receiver.delivered()
    assert len(delivered) == len(alerts)  # each once, after dedup by Idempotency-Key
    got = sorted(BudgetAlert.model_validate_json(r["body"]).used for r in delivered.values())
    assert got == sorted(a.used for a in alerts)
    for r in delivered.values():
        h = r["headers"]
        assert verify_signature(SECRET, r["body"], h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER])
    # A delivery retried keeps its idempotency key (that is what makes "once" possible).
    keys_of_failed = {r["headers"]["Idempotency-Key"] for r in receiver.requests[:3]}
    assert keys_of_failed <= set(delivered)
    # The receiver got the hung attempts too (their answers were lost): without the
    # key it would have processed those alerts twice.
    hung = {r["headers"]["Idempotency-Key"] for r in receiver.requests if r["mode"] == "hang"}
    assert hung and hung <= set(delivered)
    stats = sink.stats
    assert stats["sent"] == len(alerts) and stats["failed"] == 0 and stats["retried"] >= 6
    sink.close()


@pytest.mark.timeout(60)
def test_usage_events_batched_and_the_host_never_waits(receiver: Receiver) -> None:
    receiver.mode = "hang"
    receiver.hang_s = 0.6
    sink = WebhookSink(
        receiver.url, secret=SECRET, events=True, timeout_s=0.2, backoff=0.01,
        max_backoff=0.05, max_retries=100, batch_size=100, flush_interval_s=0.05,
    )  # fmt: skip
    tracker = agentmeter.Tracker()
    tracker.record_llm("gpt-4o-mini", 1, 1, call_id="warm")  # first price lookup, untimed
    tracker.add_sink(sink)
    worst = 0.0
    for n in range(250):
        t0 = time.perf_counter()
        tracker.record_llm("gpt-4o-mini", 100 + n, 5, session_id="s1", call_id=f"c{n}")
        worst = max(worst, time.perf_counter() - t0)
    assert worst < HOST_BOUND_S, f"record_llm blocked {worst * 1000:.1f} ms"
    time.sleep(0.5)
    receiver.mode = "ok"
    assert sink.flush(timeout=30)
    batches = [json.loads(r["body"]) for r in receiver.delivered().values()]
    assert all(
        r["headers"]["X-Agentmeter-Kind"] == "usage_events" for r in receiver.delivered().values()
    )
    assert all(len(b["events"]) <= 100 for b in batches)
    ids = [e["call_id"] for b in batches for e in b["events"]]
    assert sorted(ids) == sorted(f"c{n}" for n in range(250))  # each event once
    first = next(e for b in batches for e in b["events"] if e["call_id"] == "c0")
    assert first["input_tokens"] == 100 and first["model"] == "gpt-4o-mini"
    sink.close()


def test_alerts_from_a_tracker_budget(receiver: Receiver) -> None:
    """The real path: a budget's alert_at threshold crossed -> the sink's alert()."""
    sink = WebhookSink(receiver.url, secret=SECRET)
    tracker = agentmeter.Tracker()
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.add_sink(sink)
    tracker.set_budget(budget=Budget(max_tokens=1000, alert_at=(0.5, 0.8)), customer_id="acme")
    tracker.record_llm("m", 400, 0, customer_id="acme")
    tracker.record_llm("m", 200, 0, customer_id="acme")  # 60%: crosses 0.5
    tracker.record_llm("m", 300, 0, customer_id="acme")  # 90%: crosses 0.8
    tracker.record_llm("m", 10, 0, customer_id="acme")  # nothing new
    assert sink.flush(timeout=10)
    got = [BudgetAlert.model_validate_json(r["body"]) for r in receiver.requests]
    assert [(a.threshold, a.used, a.limit) for a in got] == [
        (0.5, 600, "max_tokens"),
        (0.8, 900, "max_tokens"),
    ]
    assert got[0].key == {"customer_id": "acme"}
    sink.close()


def test_queue_overflow_counted_and_logged_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.mode = "hang"
    receiver.hang_s = 0.5
    sink = WebhookSink(receiver.url, secret=SECRET, timeout_s=0.2, max_queue=5, max_retries=0)
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        sink.alert(make_alert(0))
        deadline = time.monotonic() + 10
        while not receiver.requests:  # the first one is in flight, off the queue
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for n in range(1, 21):
            sink.alert(make_alert(n))
    assert sink.stats["dropped"] == 15 and sink.stats["queued"] == 5
    assert caplog.text.count("queue full") == 1
    receiver.mode = "ok"
    assert sink.flush(timeout=20)
    # The one that hung had no retries left: given up, logged; the 5 queued went out.
    assert sink.stats["failed"] == 1 and sink.stats["sent"] == 5
    assert "given up" in caplog.text
    sink.close()


def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.mode = "bad"
    sink = WebhookSink(receiver.url, secret=SECRET, backoff=0.01)
    sink.alert(make_alert(0))
    assert sink.flush(timeout=10)
    assert len(receiver.requests) == 1
    assert sink.stats["failed"] == 1 and sink.stats["retried"] == 0
    sink.close()


@pytest.mark.timeout(30)
def test_close_is_bounded_while_the_endpoint_hangs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.mode = "hang"
    receiver.hang_s = 3.0
    sink = WebhookSink(receiver.url, secret=SECRET, timeout_s=0.3, max_retries=1000)
    for n in range(3):
        sink.alert(make_alert(n))
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        sink.close(timeout=0.5)
    assert time.monotonic() - start < 0.5 + 0.3 + 1.0 + 0.5
    assert "not delivered" in caplog.text
    sink.alert(make_alert(9))  # after close: logged, not raised
    assert sink.stats["queued"] <= 3


def test_unreachable_endpoint_never_breaks_the_host() -> None:
    sink = WebhookSink(
        "http://127.0.0.1:9/none", secret=SECRET, timeout_s=0.2, max_retries=1, backoff=0.01
    )
    tracker = agentmeter.Tracker()
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.add_sink(sink)
    tracker.set_budget(budget=Budget(max_tokens=10, alert_at=(0.5,)), customer_id="c")
    tracker.record_llm("m", 9, 0, customer_id="c")
    assert sink.flush(timeout=10)
    assert sink.stats["failed"] == 1
    sink.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="url"):
        WebhookSink("ftp://x", secret=SECRET)
    with pytest.raises(TypeError, match="secret"):
        WebhookSink("http://127.0.0.1:1/", secret="")
    with pytest.raises(ValueError, match="timeout_s"):
        WebhookSink("http://127.0.0.1:1/", secret=SECRET, timeout_s=0)
    with pytest.raises(TypeError, match="max_retries"):
        WebhookSink("http://127.0.0.1:1/", secret=SECRET, max_retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        WebhookSink("http://127.0.0.1:1/", secret=SECRET, max_queue=0)


@pytest.mark.timeout(60)
def test_queued_alert_goes_out_at_interpreter_exit(receiver: Receiver) -> None:
    import subprocess
    import sys

    receiver.mode = "fail"  # the first attempts fail; exit still waits for the retry
    code = f"""
import threading, time
from datetime import datetime, timezone
from agentmeter import BudgetAlert
from agentmeter.webhook import WebhookSink
sink = WebhookSink({receiver.url!r}, secret="s", backoff=0.05, max_backoff=0.1,
                   max_retries=100, exit_timeout_s=20)
now = datetime.now(timezone.utc)
sink.alert(BudgetAlert(owner="o", key={{}}, limit="max_tokens", threshold=1.0, used=10,
                       limit_value=10, at=now))
"""  # no close(): the atexit hook flushes

    def recover() -> None:  # after the first failed attempt arrived
        deadline = time.monotonic() + 40
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        receiver.mode = "ok"

    threading.Thread(target=recover, daemon=True).start()
    proc = subprocess.run([sys.executable, "-c", code], timeout=50, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(receiver.delivered()) == 1
    assert any(r["mode"] == "fail" for r in receiver.requests)
