"""The console's doors: every page and action refused without a session, forms from
elsewhere refused, the token never shown. (The browser tests: test_console_browser.py.)"""

from __future__ import annotations

import contextlib
import html
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import drain_stats, running_worker, worker_settings
from tests.test_http import TOKEN, serving
from worker.queue.priorities import bulk_queue_name
from worker.web.console_pages import PAGE_SIZE

WORKER = Path(__file__).resolve().parent.parent / "worker"
QUEUE = "stats_updates"
BULK = bulk_queue_name(QUEUE)
PAGES = ["/admin/", "/admin/jobs", "/admin/jobs/1", "/admin/dead", "/admin/callbacks"]
ACTIONS = [
    "/admin/jobs/1/retry",
    "/admin/dead/retry",
    "/admin/callbacks/resend",
    "/admin/pause",
    "/admin/logout",
]


@contextlib.asynccontextmanager
async def console(database_url: str, **overrides) -> AsyncIterator[httpx.AsyncClient]:
    settings = worker_settings(database_url, host="127.0.0.1", admin_token=TOKEN, **overrides)
    async with running_worker(settings) as worker, serving(worker) as client:
        yield client


async def _logged_in(client: httpx.AsyncClient) -> str:
    """Log in; the CSRF token from the overview's forms."""
    response = await client.post("/admin/login", data={"token": TOKEN})
    assert response.status_code == 303
    page = (await client.get("/admin/")).text
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_without_a_session_every_page_sends_to_login_and_every_action_is_refused(
    database_url,
):
    async with console(database_url) as client:
        for path in PAGES:
            response = await client.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/admin/login")
        for path in ACTIONS:
            response = await client.post(path, data={"csrf": "guess"})
            assert response.status_code == 403, path
            assert "Refused" in response.text
        # the API's bearer token is not a console session, nor the other way round
        bearer = await client.get("/admin/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 303
        client.cookies.set("stats_worker_session", "9999999999.forged", path="/admin")
        assert (await client.get("/admin/")).status_code == 303
        client.cookies.clear()
        await _logged_in(client)
        assert (await client.get("/jobs")).status_code == 401


async def test_login_sets_a_strict_httponly_cookie_and_never_shows_the_token(database_url):
    async with console(database_url) as client:
        wrong = await client.post("/admin/login", data={"token": "not-it"})
        assert wrong.status_code == 401
        assert "not the admin token" in wrong.text and "not-it" not in wrong.text
        right = await client.post("/admin/login", data={"token": TOKEN})
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
        assert TOKEN.lower() not in cookie
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code in {200, 404}, path
            assert TOKEN not in response.text
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_a_form_from_another_origin_or_without_the_token_is_refused(database_url, pool):
    async with console(database_url) as client:
        csrf = await _logged_in(client)
        elsewhere = await client.post(
            "/admin/pause",
            data={"csrf": csrf, "paused": "true"},
            headers={"Origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403
        without = await client.post("/admin/pause", data={"paused": "true"})
        assert without.status_code == 403
        assert not await pool.fetchval("SELECT count(*) FROM stats_worker.paused_queues")

        ours = await client.post(
            "/admin/pause",
            data={"csrf": csrf, "paused": "true"},
            headers={"Origin": str(client.base_url).rstrip("/")},
        )
        assert ours.status_code == 303
        assert await pool.fetchval("SELECT count(*) FROM stats_worker.paused_queues") == 1
        assert "Resume consuming" in (await client.get("/admin/")).text


async def test_the_console_is_off_without_admin_token_and_its_assets_are_served(database_url):
    settings = worker_settings(database_url, host="127.0.0.1")
    async with running_worker(settings) as worker, serving(worker) as client:
        assert (await client.get("/admin/login")).status_code == 404
        assert (await client.get("/")).status_code == 404
    async with console(database_url) as client:
        assert (await client.get("/")).headers["location"] == "/admin/"
        for asset in ("console.css", "console.js"):
            assert (await client.get(f"/admin/static/{asset}")).status_code == 200


async def test_dead_letters_of_the_bulk_queue_are_shown_and_retried(database_url, pool):
    """msg_ids are per queue: the same number in both, told apart by a queue column."""
    for queue in (QUEUE, BULK):
        await pool.execute("SELECT pgmq.send($1, $2::jsonb)", queue, {"from": queue})
    await drain_stats(database_url)  # both malformed: dead at once, each msg_id 1
    async with console(database_url) as client:
        csrf = await _logged_in(client)
        overview = (await client.get("/admin/")).text
        assert '<b id="bulk-dead"><a href="/admin/dead">1</a></b>' in overview
        dead = (await client.get("/admin/dead")).text
        assert 'href="/admin/jobs/1"' in dead and f'href="/admin/jobs/1?queue={BULK}"' in dead
        assert f'<td class="opt">{BULK}</td>' in dead and f'<td class="opt">{QUEUE}</td>' in dead
        detail = (await client.get(f"/admin/jobs/1?queue={BULK}")).text
        assert f"&#34;from&#34;: &#34;{BULK}&#34;" in detail  # its payload, not the live one's
        assert f'name="queue" value="{BULK}"' in detail
        unknown = await client.get("/admin/jobs/1?queue=elsewhere")
        assert unknown.status_code == 404

        retried = await client.post("/admin/jobs/1/retry", data={"csrf": csrf, "queue": BULK})
        assert retried.status_code == 303
        location = retried.headers["location"]
        assert location.startswith("/admin/jobs/") and location.endswith(f"?queue={BULK}")
        runs = await pool.fetch(
            "SELECT queue_name, retried_as IS NOT NULL AS retried FROM stats_worker.job_runs"
            " WHERE msg_id = 1 ORDER BY queue_name"
        )
        assert [tuple(r) for r in runs] == [(QUEUE, False), (BULK, True)]
        listed = (await client.get(f"/admin/jobs?queue={BULK}")).text
        assert "badge retried" in listed and f'<option value="{BULK}" selected' in listed
        assert "badge retried" not in (await client.get("/admin/jobs")).text

        assert (await client.post("/admin/dead/retry", data={"csrf": csrf})).status_code == 303
        assert not await pool.fetchval(
            "SELECT count(*) FROM stats_worker.job_runs WHERE status = 'dead' AND msg_id = 1"
            " AND retried_as IS NULL"
        )


async def test_the_jobs_page_pages_through_every_job_once_keeping_its_filters(database_url, pool):
    total = PAGE_SIZE + 5
    for i in range(total):
        await pool.execute("SELECT pgmq.send($1, $2::jsonb)", QUEUE, {"n": i})
    await drain_stats(database_url)  # malformed: each dead at once
    async with console(database_url) as client:
        await _logged_in(client)
        first = (await client.get("/admin/jobs?status=dead")).text
        older = html.unescape(first.split('id="older" href="', 1)[1].split('"', 1)[0])
        assert "status=dead" in older
        second = (await client.get(older)).text
        assert 'id="older"' not in second
    first_ids, second_ids = _job_ids(first), _job_ids(second)
    assert len(first_ids) == PAGE_SIZE and first_ids == sorted(first_ids, reverse=True)
    assert sorted(first_ids + second_ids) == list(range(1, total + 1))  # each once


def _job_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/admin/jobs/(\d+)">', page)]


@pytest.mark.parametrize(
    "filters", ["status=bogus", "tenant=nope", "hours=x", "before=-1", "queue=elsewhere"]
)
async def test_odd_filters_list_jobs_instead_of_failing(database_url, filters):
    async with console(database_url) as client:
        await _logged_in(client)
        assert (await client.get(f"/admin/jobs?{filters}")).status_code == 200


async def test_wrong_tokens_at_the_login_form_are_limited_like_the_api(database_url):
    async with console(database_url) as client:
        for _ in range(10):
            assert (await client.post("/admin/login", data={"token": "no"})).status_code == 401
        blocked = await client.post("/admin/login", data={"token": TOKEN})
        assert blocked.status_code == 429
        assert "wait a minute" in blocked.text
        assert "stats_worker_session" not in blocked.headers.get("set-cookie", "")


_LIST_IMPORTS = """
import ast, json, sys
tree = ast.parse(open(sys.argv[1]).read())
print(json.dumps(sorted({
    alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
    for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
    for alias in node.names
})))
"""


def _imports(path: Path) -> set[str]:
    """The names a module imports, parsed in a fresh interpreter: CPython 3.11's parser
    can fail with a SystemError in a process where a RecursionError happened before."""
    listed = subprocess.run(
        [sys.executable, "-c", _LIST_IMPORTS, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return set(json.loads(listed.stdout))


def test_the_console_depends_on_no_upper_layer():
    """It is mounted by worker.web.http and runs inside worker.app: it imports neither."""
    for module in (
        "web/console",
        "web/console_pages",
        "web/console_auth",
        "web/guesses",
        "queue/control",
        "queue/jobs",
    ):
        imported = _imports(WORKER / f"{module}.py")
        upward = {
            name
            for name in imported
            if name.startswith(("worker.app", "worker.web.http", "worker.cli"))
        }
        assert upward == set(), module
