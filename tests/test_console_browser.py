"""The console in a real browser (Debian's chromium, driven by Playwright).

An operator logs in, sees a dead letter a real failing job produced, retries it
and watches it succeed without reloading; bulk retry, callback resend and pause
work the same way. Screenshots of each page go to tests/artifacts/console/
(git-ignored; CI keeps them as artefacts). Without chromium the tests skip,
except with CI=true, where they fail saying so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.receiver import receiving
from tests.support import prepare_engine_table, running_worker, wait_for, worker_settings
from tests.test_http import TOKEN, serving
from worker.app import Worker
from worker.callback.invalidator import SWEEP_MAX_IDLE_SECONDS
from worker.queue.pgmq import send

QUEUE = "stats_updates"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
PHONE = {"width": 390, "height": 844}
SECRET = "s3cret-token"
CALLBACK_ATTEMPTS = 2
"""Attempts before a callback is given up on: two refusals, and it is failed."""

playwright_api = pytest.importorskip("playwright.async_api")


def _require_chromium() -> None:
    if Path(CHROMIUM).is_file():
        return
    message = "chromium is not installed (./dev test installs Debian's chromium as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def operator_console(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[Any, Worker, str]]:
    """A worker (engine jobs, one attempt each), its HTTP app, and a logged-in page."""
    _require_chromium()
    await prepare_engine_table(database_url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = worker_settings(
        database_url,
        host="127.0.0.1",
        admin_token=TOKEN,
        max_attempts=1,
        poll_interval_seconds=0.2,
        **overrides,
    )
    async with (
        running_worker(settings) as worker,
        serving(worker) as client,
        playwright_api.async_playwright() as driver,
    ):
        browser = await driver.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport=PHONE)
            page.set_default_timeout(15_000)
            base = str(client.base_url).rstrip("/")
            await page.goto(f"{base}/admin/")
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/admin/")
            yield page, worker, base
        finally:
            await browser.close()


async def _shot(page: Any, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


async def _dead(pool: Any, msg_id: int) -> bool:
    status = await pool.fetchval(
        "SELECT status FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
    )
    return bool(status == "dead")


async def test_an_operator_sees_a_dead_letter_retries_it_and_watches_it_succeed(database_url):
    async with operator_console(database_url) as (page, worker, base):
        await _shot(page, "login-then-overview-empty")
        dead_id = await send(worker.pool, QUEUE, {"job": "doomed", "fail_times": 1})
        await wait_for(lambda: _dead(worker.pool, dead_id))

        # the overview refreshes itself: the dead letter shows up without a reload
        await page.locator("#dead").filter(has_text="1").wait_for()
        await _shot(page, "overview")
        await page.click("text=Dead letters")
        row = page.locator("tr", has_text="planned failure 1 of 1")
        await row.wait_for()
        await _shot(page, "dead-letters")
        await page.click(f"a[href='/admin/jobs/{dead_id}']")
        await page.locator("#job-error").filter(has_text="planned failure").wait_for()
        assert '"fail_times": 1' in await page.locator("#payload").inner_text()
        await _shot(page, "job-dead")

        await page.click("#retry")
        await page.locator("#job-status").filter(has_text="succeeded").wait_for()
        assert page.url != f"{base}/admin/jobs/{dead_id}"  # the new message's own page
        await _shot(page, "job-retried-succeeded")

        await page.goto(f"{base}/admin/jobs?status=retried")
        await page.locator(f"a[href='/admin/jobs/{dead_id}']").wait_for()
        await _shot(page, "jobs-filtered")


async def test_bulk_retry_from_the_console_reruns_every_dead_letter(database_url):
    async with operator_console(database_url) as (page, worker, base):
        jobs = [f"bulk {n}" for n in range(3)]
        ids = [await send(worker.pool, QUEUE, {"job": job, "fail_times": 1}) for job in jobs]
        for msg_id in ids:
            await wait_for(lambda m=msg_id: _dead(worker.pool, m))
        await page.goto(f"{base}/admin/dead")
        for msg_id in ids:
            link = page.locator(f"a[href='/admin/jobs/{msg_id}']")
            await page.locator("tr", has=link).filter(has_text="planned failure 1 of 1").wait_for()
        await _shot(page, "dead-letters-before-bulk-retry")

        await page.click("#retry-all")
        await page.wait_for_url(f"{base}/admin/jobs")
        await page.locator("tr.status-succeeded").nth(2).wait_for()
        assert await page.locator("tr.status-retried").count() == 3
        retried_as = await worker.pool.fetch(
            "SELECT retried_as FROM stats_worker.job_runs WHERE msg_id = ANY($1)", ids
        )
        for new_id in {row["retried_as"] for row in retried_as}:
            assert await page.locator(f"tr.status-succeeded a[href='/admin/jobs/{new_id}']").count()
        runs = await worker.pool.fetch(
            "SELECT job, count(*) FROM engine_runs GROUP BY job ORDER BY job"
        )
        assert [tuple(row) for row in runs] == [(job, 2) for job in jobs]  # failed, then ran
        await _shot(page, "jobs-after-bulk-retry")


async def test_a_failed_callback_is_resent_from_the_console_and_delivered(database_url):
    async with (
        receiving() as receiver,
        operator_console(
            database_url,
            cache_invalidation_url=receiver.url,
            internal_secret=SECRET,
            callback_max_attempts=CALLBACK_ATTEMPTS,
            callback_retry_base_seconds=0.05,
            callback_retry_max_seconds=0.2,
            callback_timeout_seconds=2.0,
        ) as (page, worker, base),
    ):
        receiver.answer_always(503, body="cache warming up")
        msg_id = await send(worker.pool, QUEUE, {"job": "cached"})
        await wait_for(lambda: _callback_failed(worker.pool, msg_id))
        refused = receiver.requests[:]
        assert [r.body for r in refused] == [{"tags": ["job:cached"]}] * CALLBACK_ATTEMPTS
        receiver.answer_always(204)

        await page.goto(f"{base}/admin/callbacks")
        row = page.locator("tr", has_text="job:cached")
        await row.filter(has_text="HTTP 503: cache warming up").wait_for()
        assert (await row.locator("td").nth(2).inner_text()).strip() == str(CALLBACK_ATTEMPTS)
        await _shot(page, "callbacks-failed")

        async with page.expect_navigation():
            await row.get_by_role("button", name="Resend").click()
        await page.locator("text=No failed callbacks.").wait_for()
        # Off the list at once (it lists failed callbacks only), and sent at once: the
        # resend wakes the delivery task, which would otherwise sleep until its next
        # sweep (SWEEP_MAX_IDLE_SECONDS).
        await receiver.wait_for_requests(CALLBACK_ATTEMPTS + 1, timeout=SWEEP_MAX_IDLE_SECONDS / 2)
        await wait_for(lambda: _no_callback(worker.pool, msg_id))
        delivered = receiver.requests[CALLBACK_ATTEMPTS]
        assert delivered.body == {"tags": ["job:cached"]}
        assert delivered.headers["authorization"] == f"Bearer {SECRET}"

        # The page, refreshing itself after the delivery, still lists nothing failed.
        async with page.expect_response(_self_refresh, timeout=15_000) as refresh:
            pass
        assert "No failed callbacks." in await (await refresh.value).text()
        await page.locator("text=No failed callbacks.").wait_for()
        await _shot(page, "callbacks-resent")
        assert len(receiver.requests) == CALLBACK_ATTEMPTS + 1


def _self_refresh(response: Any) -> bool:
    request = response.request
    return request.url.endswith("/admin/callbacks") and request.headers.get("x-refresh") == "1"


async def _callback_failed(pool: Any, msg_id: int) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM stats_worker.callbacks"
            " WHERE $1 = ANY(msg_ids) AND status = 'failed'",
            msg_id,
        )
    )


async def _no_callback(pool: Any, msg_id: int) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM stats_worker.callbacks WHERE $1 = ANY(msg_ids)", msg_id
    )


async def test_pause_from_the_console_stops_reading_until_resumed(database_url):
    async with operator_console(database_url) as (page, worker, base):
        await page.click("#pause-toggle")
        await page.locator("#consuming").filter(has_text="paused").wait_for()

        async def paused() -> bool:
            return worker.status.paused

        await wait_for(paused)
        held = await send(worker.pool, QUEUE, {"job": "held"})
        await page.wait_for_timeout(1000)  # five polls
        await page.goto(f"{base}/admin/jobs")
        row = page.locator("tr", has=page.locator(f"a[href='/admin/jobs/{held}']"))
        assert "queued" in await row.inner_text()
        await _shot(page, "paused-job-waits")

        await page.goto(f"{base}/admin/")
        await _shot(page, "overview-paused")
        await page.click("#pause-toggle")
        await page.locator("#consuming").filter(has_text="running").wait_for()
        await page.goto(f"{base}/admin/jobs/{held}")
        await page.locator("#job-status").filter(has_text="succeeded").wait_for()
