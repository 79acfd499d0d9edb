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

import httpx

from tests.test_http import AUTH, bare_worker, serving
from worker.metrics import REGISTRY

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
