"""The operator API against what anyone may send it: every error is a 4xx with a reason.

A seeded fuzz of paths, query strings and bodies (plus the cases seen in the
field) against the real app on a real socket and a real database: nothing
answers 5xx while the database is up, and nothing the database refuses is
reported as the database being down.
"""

from __future__ import annotations

import asyncio
import json
import random
from urllib.parse import urlsplit

import asyncpg
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import scratch_database
from tests.test_http import AUTH, bare_worker, serving
from worker.core.metrics import REGISTRY
from worker.web.server import REQUEST_HEAD_SECONDS

ODD_TEXT = ["", "²", "٣", "1e3", "-1", "0", "9" * 30, "\u0000", "%00", "50 ", "NaN", "☃", "0x10"]
ODD_IDS = [0, 1, 2**63 - 1, 2**63, 10**30, 12345678901234567890]
ODD_WHEN = [
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "2026-13-40T00:00:00Z",
    "2026-11-23T08:00:00",
    "yesterday",
]


def _odd_bodies(rng: random.Random) -> list[bytes]:
    bodies: list[object] = [
        {"body": {"tenant_id": "x", "match_id": 1, "note": "a\u0000b"}},
        {"body": {}, "delay_seconds": float("1e308")},
        {"body": {}, "delay_seconds": -1},
        {"body": [], "run_at": "2026-11-23T08:00:00Z"},
        {"body": {}, "delay_seconds": 1, "run_at": "2026-11-23T08:00:00Z"},
        {"body": {"deep": [[[[[[[[[[1]]]]]]]]]]}, "extra": True},
        *({"body": {}, "run_at": when} for when in ODD_WHEN),
    ]
    raw = [json.dumps(b).encode() for b in bodies]
    raw += [b"", b"{", b"null", b"\xff\xfe", b'{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
    raw += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(30)]
    return raw


async def test_no_operator_input_gets_a_5xx_while_the_database_is_up(database_url):
    rng = random.Random(20261202)
    async with bare_worker(database_url) as worker, serving(worker) as client:
        answers: list[tuple[str, int]] = []

        async def ask(method: str, url: str, **kwargs: object) -> None:
            response = await client.request(method, url, headers=AUTH, **kwargs)  # type: ignore[arg-type]
            answers.append((f"{method} {url}", response.status_code))
            if response.status_code >= 400:
                assert response.json()["error"], url  # a reason, one line

        for text in ODD_TEXT + [str(rng.randrange(-5, 3000)) for _ in range(20)]:
            await ask("GET", "/jobs", params={"limit": text})
            await ask("GET", "/jobs", params={"status": text})
        for msg_id in ODD_IDS + [rng.randrange(10**19) for _ in range(10)]:
            await ask("GET", f"/jobs/{msg_id}")
            await ask("POST", f"/jobs/{msg_id}/retry")
        for body in _odd_bodies(rng):
            await ask("POST", "/jobs", content=body)
        await ask("POST", "/jobs", content=b"x" * 70_000)
        await ask("GET", "/queue")

        server_errors = [(what, code) for what, code in answers if code >= 500]
        assert server_errors == []
        codes = dict(answers)
        assert codes["GET /jobs/9223372036854775808"] == 404
        assert {code for what, code in answers if "limit" in what} <= {200, 400}


async def test_a_far_run_at_is_refused_like_a_long_delay(database_url):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        far = await client.post(
            "/jobs", headers=AUTH, json={"body": {}, "run_at": "9999-12-31T23:59:59Z"}
        )
        assert far.status_code == 400
        assert "days ahead" in far.json()["error"]
        big = await client.post("/jobs", headers=AUTH, content=b"{" + b" " * 70_000 + b"}")
        assert big.status_code == 413


async def test_token_guessing_is_rate_limited_and_counted(database_url):
    before = REGISTRY.get_sample_value("stats_worker_auth_failures_total") or 0.0
    async with bare_worker(database_url) as worker, serving(worker) as client:
        codes = [
            (await client.get("/queue", headers={"Authorization": f"Bearer guess{i}"})).status_code
            for i in range(12)
        ]
        assert codes[:10] == [401] * 10
        assert codes[10:] == [429, 429]
        # Even the right token waits out the window from a client that guessed.
        assert (await client.get("/queue", headers=AUTH)).status_code == 429
        assert "stats_worker_auth_failures_total" in (await client.get("/metrics")).text
    assert REGISTRY.get_sample_value("stats_worker_auth_failures_total") == before + 10


async def test_a_slow_body_is_cut_off(database_url):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        url = httpx.URL(str(client.base_url))
        reader, writer = await asyncio.open_connection(url.host, url.port)
        head = f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        writer.write(head.encode() + b"Content-Length: 100\r\n\r\n{")  # and nothing more
        answer = await asyncio.wait_for(reader.read(4096), timeout=20)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")


async def test_undecodable_and_scalar_bodies_are_shown_not_failed(database_url, conn):
    deep = await conn.fetchval(
        "SELECT pgmq.send('stats_updates', $1::text::jsonb)", "[" * 3000 + "]" * 3000
    )
    scalar = await conn.fetchval("SELECT pgmq.send('stats_updates', '5'::jsonb)")
    async with bare_worker(database_url) as worker, serving(worker) as client:
        listed = await client.get("/jobs", headers=AUTH)
        assert listed.status_code == 200
        assert {deep, scalar} <= {job["msg_id"] for job in listed.json()["jobs"]}
        shown = await client.get(f"/jobs/{deep}", headers=AUTH)
        assert shown.status_code == 200
        message = shown.json()["message"]
        assert "nested deeper" in message["undecodable"]
        assert message["raw"].startswith("[[[[") and len(message["raw"]) == 2000
        assert (await client.get(f"/jobs/{scalar}", headers=AUTH)).json()["message"] == 5


api_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
api_requests = st.one_of(
    st.tuples(st.just("GET"), st.just("/jobs"), st.dictionaries(
        st.sampled_from(["limit", "status", "x"]), api_text, max_size=2), st.none()),
    st.tuples(st.sampled_from(["GET", "POST"]), st.integers(-5, 10**25).map(
        lambda i: f"/jobs/{i}" if i % 2 else f"/jobs/{i}/retry"), st.just({}), st.none()),
    st.tuples(st.just("POST"), st.just("/jobs"), st.just({}), st.one_of(
        st.binary(max_size=300),
        st.builds(lambda body, delay, when: json.dumps(
            {"body": body, "delay_seconds": delay, "run_at": when}).encode(),
            st.dictionaries(api_text, api_text, max_size=3) | api_text,
            st.none() | st.floats() | st.integers(-(10**9), 10**12) | api_text,
            st.none() | st.datetimes(timezones=st.timezones()).map(str) | api_text))),
    st.tuples(st.just("GET"), st.sampled_from(["/queue", "/health", "/metrics"]),
              st.just({}), st.none()),
)  # fmt: skip


async def _fuzz_api(database_url: str, requests: list, *, admin_dsn: str | None = None) -> list:
    """The requests against a worker's app; with ``admin_dsn``, its database cut off first."""
    async with bare_worker(database_url) as worker, serving(worker) as client:
        if admin_dsn is not None:
            await _cut_off(admin_dsn, database_url)
        answers = []
        for method, path, params, content in requests:
            response = await client.request(
                method, path, params=params, content=content, headers=AUTH
            )
            answers.append((method, path, response.status_code))
        return answers


async def _cut_off(admin_dsn: str, database_url: str) -> None:
    """The database stops taking connections, and the worker's are ended."""
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests=st.lists(api_requests, min_size=20, max_size=40))
def test_hypothesis_finds_no_5xx_while_the_database_is_up(database_url, requests):
    answers = asyncio.run(_fuzz_api(database_url, requests))
    assert [a for a in answers if a[2] >= 500] == []


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests=st.lists(api_requests, min_size=20, max_size=40))
def test_with_the_database_gone_only_503_is_a_5xx(server_dsn, template_database, requests):
    answers = asyncio.run(_with_a_database_to_lose(server_dsn, template_database, requests))
    assert [a for a in answers if a[2] >= 500 and a[2] != 503] == []
    assert {a[2] for a in answers if a[1] == "/health"} <= {503}


async def _with_a_database_to_lose(server_dsn: str, template: str, requests: list) -> list:
    async with scratch_database(server_dsn, template) as url:
        try:
            return await _fuzz_api(url, requests, admin_dsn=server_dsn)
        finally:
            admin = await asyncpg.connect(server_dsn)
            try:
                name = urlsplit(url).path.lstrip("/")
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            finally:
                await admin.close()


async def test_a_connection_that_trickles_its_request_head_is_closed(database_url):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        url = httpx.URL(str(client.base_url))
        reader, writer = await asyncio.open_connection(url.host, url.port)
        started = asyncio.get_running_loop().time()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(1), timeout=0.25) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        writer.close()
        took = asyncio.get_running_loop().time() - started
    assert closed, "a trickled request head kept its connection open"
    assert took < REQUEST_HEAD_SECONDS + 3
