"""Dead-letter alerts against a real HTTP receiver standing in for a Slack webhook."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.receiver import Receiver, receiving
from tests.support import wait_for
from worker.callback.posting import http_client
from worker.core.metrics import REGISTRY
from worker.core.settings import Settings
from worker.queue.runs import JobRun
from worker.upkeep.alerts import DeadLetterAlerter

QUEUE = "stats_updates"
TENANT = uuid.UUID("6f1c2a40-0000-4000-8000-00000000abcd")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


@contextlib.asynccontextmanager
async def alerting(url: str | None, interval: float = 0.0) -> AsyncIterator[DeadLetterAlerter]:
    settings = Settings(
        alert_webhook_url=url, alert_min_interval_seconds=interval, callback_timeout_seconds=2.0
    )
    async with http_client(settings) as client:
        alerter = DeadLetterAlerter(settings, client)
        task = asyncio.create_task(alerter.run())
        try:
            yield alerter
            assert not task.done(), "the alerter's task must live as long as the worker"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def dead(msg_id: int, reason: str = "attempts exhausted (5/5): RuntimeError: boom") -> JobRun:
    now = datetime.now(UTC)
    return JobRun(msg_id, "dead", 5, now, now, TENANT, 17, now, 3.0, reason)


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("stats_worker_alerts_total", {"result": result}) or 0.0


async def counted_more(result: str, before: float) -> None:
    """Wait until one more alert has this result."""

    async def more() -> bool:
        return counted(result) > before

    await wait_for(more)


def text_of(body: Any) -> str:
    assert set(body) == {"text"}
    text: str = body["text"]
    return text


async def test_a_dead_letter_posts_what_happened_and_why(receiver):
    sent_before = counted("sent")
    async with alerting(receiver.url) as alerter:
        alerter.dead_lettered(dead(42, "gave up: <bad> & worse"), QUEUE)
        [request] = await receiver.wait_for_requests(1)
        await counted_more("sent", sent_before)
    assert request.headers["content-type"] == "application/json"
    text = text_of(request.body)
    assert "message 42" in text
    assert f"queue {QUEUE}" in text
    assert f"tenant {TENANT}" in text
    assert "match 17" in text
    assert "after 5 attempt" in text
    assert "gave up: &lt;bad&gt; &amp; worse" in text  # Slack's escaping
    assert "more" not in text


async def test_a_burst_is_rate_limited_and_summarised(receiver):
    suppressed_before = counted("suppressed")
    async with alerting(receiver.url, interval=0.6) as alerter:
        alerter.dead_lettered(dead(1), QUEUE)
        await receiver.wait_for_requests(1)
        for msg_id in (2, 3, 4, 5):
            alerter.dead_lettered(dead(msg_id), QUEUE)
        first, second = await receiver.wait_for_requests(2)
        await asyncio.sleep(0.7)  # one more interval: nothing else to say
    assert len(receiver.requests) == 2
    assert "message 1 " in text_of(first.body)
    summary = text_of(second.body)
    assert "message 2 " in summary
    assert "+3 more dead letters (msg_id 3, 4, 5)" in summary
    assert second.at - first.at >= 0.55
    assert counted("suppressed") - suppressed_before == 3


async def test_a_failing_webhook_is_logged_and_the_next_alert_still_goes(receiver, caplog):
    receiver.answer_next(1, 500)
    failed_before = counted("failed")
    async with alerting(receiver.url, interval=0.1) as alerter:
        alerter.dead_lettered(dead(7), QUEUE)
        await receiver.wait_for_requests(1)
        await asyncio.sleep(0.2)
        alerter.dead_lettered(dead(8), QUEUE)
        _, delivered = await receiver.wait_for_requests(2)
    assert "message 8 " in text_of(delivered.body)
    assert counted("failed") - failed_before == 1
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (error.msg_id, error.error) == (7, "HTTP 500")


async def test_an_unreachable_webhook_never_leaks_its_url(caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/very-secret-path"
    failed_before = counted("failed")
    async with alerting(url) as alerter:
        alerter.dead_lettered(dead(9), QUEUE)
        await counted_more("failed", failed_before)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "ConnectError" in error.error
    assert all("very-secret-path" not in str(record.__dict__) for record in caplog.records)


async def test_without_a_webhook_dead_letters_are_not_alerted():
    sent_before, failed_before = counted("sent"), counted("failed")
    async with alerting(None) as alerter:
        alerter.dead_lettered(dead(10), QUEUE)
        await asyncio.sleep(0.05)
    assert (counted("sent"), counted("failed")) == (sent_before, failed_before)
