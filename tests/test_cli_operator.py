"""The operator's commands as an operator reads them: jobs, retry, callbacks, verify's diff."""

from __future__ import annotations

import json

from tests.support import drain_stats, play_league
from tests.test_cli import cli
from worker.cli.text import drift_lines, drift_summary, shorten
from worker.queue.priorities import bulk_queue_name
from worker.stats.league import generate_league
from worker.stats.maintenance import Drift

QUEUE = "stats_updates"
BULK = bulk_queue_name(QUEUE)
TENANT = "00000000-0000-0000-0000-00000000000a"
LONG_ERROR = "the first part of a long error " * 5 + "and the very end of it"


async def _dead_letters(database_url: str, conn, count: int, queue: str = QUEUE) -> list[int]:
    """``count`` messages the stats handler gives up on at once (their match is no number)."""
    ids = [
        await conn.fetchval(
            "SELECT pgmq.send($1, $2::jsonb)",
            queue,
            json.dumps({"tenant_id": TENANT, "match_id": "not-a-number", "n": n}),
        )
        for n in range(count)
    ]
    await drain_stats(database_url)
    return ids


async def test_dead_letters_of_the_bulk_queue_are_listed_and_retried(database_url, conn):
    [live] = await _dead_letters(database_url, conn, 1)
    first, second = await _dead_letters(database_url, conn, 2, queue=BULK)
    assert live == first  # each queue numbers its own messages: the queue tells them apart

    listed = cli(database_url, "jobs", "--status", "dead")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split()[:3] == ["msg_id", "status", "queue"]
    assert sorted(line.split()[:3] for line in lines) == sorted(
        [[str(live), "dead", QUEUE], [str(first), "dead", BULK], [str(second), "dead", BULK]]
    )
    only_bulk = json.loads(cli(database_url, "jobs", "--queue", BULK, "--json").stdout)
    assert [(job["queue"], job["msg_id"]) for job in only_bulk] == [(BULK, second), (BULK, first)]
    elsewhere = cli(database_url, "jobs", "--queue", "elsewhere")
    assert elsewhere.returncode == 1 and f"one of {QUEUE}, {BULK}" in elsewhere.stderr

    # msg_id 2 is no live message: the error names the queue that has it
    hinted = cli(database_url, "retry", str(second))
    assert hinted.returncode == 1
    assert f"--queue {BULK}" in hinted.stderr
    retried = cli(database_url, "retry", str(second), "--queue", BULK)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"message {second} is back on {BULK} as ")
    new_id = int(retried.stdout.split()[-1])
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{BULK} WHERE msg_id = $1", new_id)

    every = cli(database_url, "retry", "--all-dead")
    assert every.returncode == 0, every.stderr
    *resent, total = every.stdout.splitlines()
    assert [line.rsplit(" as ", 1)[0] for line in resent] == [
        f"message {live} is back on {QUEUE}",
        f"message {first} is back on {BULK}",
    ]
    assert total == "retried 2 dead letter(s)"
    assert cli(database_url, "jobs", "--status", "dead").stdout.splitlines()[1:] == []


async def test_jobs_shows_time_and_tenant_and_the_whole_error_when_wide(database_url, conn):
    [dead] = await _dead_letters(database_url, conn, 1)
    # A body this malformed names no tenant: give the run one, and a long error.
    await conn.execute(
        "UPDATE stats_worker.job_runs SET last_error = $1, tenant_id = $2", LONG_ERROR, TENANT
    )

    narrow = cli(database_url, "jobs")
    assert narrow.returncode == 0, narrow.stderr
    header, line = narrow.stdout.splitlines()
    assert "updated (UTC)" in header and "tenant" in header
    assert line.split()[:2] == [str(dead), "dead"]
    assert TENANT[:8] in line and TENANT not in line
    assert line.endswith("…") and "the very end" not in line
    assert "first part of a …" not in line  # cut between words, not inside one

    wide = cli(database_url, "jobs", "--wide")
    assert TENANT in wide.stdout and LONG_ERROR.strip() in wide.stdout

    other = cli(database_url, "jobs", "--tenant", "00000000-0000-0000-0000-000000000001")
    assert other.stdout.splitlines()[1:] == []
    assert len(cli(database_url, "jobs", "--since", "1h").stdout.splitlines()) == 2
    assert len(cli(database_url, "jobs", "--since", "2099-01-01").stdout.splitlines()) == 1


async def test_a_retried_dead_letter_lists_as_retried_and_says_where_it_went(database_url, conn):
    [dead] = await _dead_letters(database_url, conn, 1)
    retried = cli(database_url, "retry", str(dead))
    assert retried.returncode == 0, retried.stderr
    new_id = int(retried.stdout.split()[-1])

    listed = json.loads(cli(database_url, "jobs", "--json").stdout)
    assert {job["msg_id"]: job["status"] for job in listed} == {new_id: "queued", dead: "retried"}
    assert cli(database_url, "jobs", "--status", "dead").stdout.splitlines()[1:] == []

    again = cli(database_url, "retry", str(dead))
    assert again.returncode == 1
    assert again.stderr.strip() == f"stats-worker: message {dead} was already retried as {new_id}"


async def test_retry_all_dead_puts_back_each_dead_letter_once(database_url, conn):
    dead = await _dead_letters(database_url, conn, 3)
    none_yet = cli(database_url, "retry", "--all-dead", "--since", "2099-01-01T00:00")
    assert none_yet.stdout.splitlines() == ["retried 0 dead letter(s)"]

    every = cli(database_url, "retry", "--all-dead", "--since", "1h")
    assert every.returncode == 0, every.stderr
    assert every.stdout.splitlines()[-1] == "retried 3 dead letter(s)"
    assert [int(line.split()[1]) for line in every.stdout.splitlines()[:-1]] == dead
    assert cli(database_url, "retry", "--all-dead").stdout.strip() == "retried 0 dead letter(s)"

    assert cli(database_url, "retry").returncode == 1
    assert "--since goes with --all-dead" in cli(database_url, "retry", "1", "--since", "1h").stderr


async def test_failed_callbacks_are_listed_and_resent(database_url, conn):
    failed_id = await conn.fetchval(
        "INSERT INTO stats_worker.callbacks (msg_ids, tags, next_attempt_at, attempts, status,"
        " last_error) VALUES ('{7}', '{tenant:a}', now(), 8, 'failed', 'HTTP 503 from the app')"
        " RETURNING id"
    )
    listed = cli(database_url, "callbacks", "--failed")
    assert listed.returncode == 0, listed.stderr
    assert "tenant:a" in listed.stdout and "HTTP 503 from the app" in listed.stdout
    assert listed.stdout.splitlines()[-1] == "1 failed invalidation(s)"

    resent = cli(database_url, "callbacks", "resend")
    assert resent.returncode == 0, resent.stderr
    assert resent.stdout.startswith("1 failed invalidation(s) due again")
    row = await conn.fetchrow(
        "SELECT status, attempts, next_attempt_at <= now() AS due"
        " FROM stats_worker.callbacks WHERE id = $1",
        failed_id,
    )
    assert dict(row) == {"status": "pending", "attempts": 0, "due": True}
    assert cli(database_url, "callbacks", "--failed").stdout.splitlines()[-1] == (
        "0 failed invalidation(s)"
    )
    unknown = cli(database_url, "callbacks", "resend", "424242")
    assert unknown.returncode == 1 and "424242" in unknown.stderr


async def test_verify_prints_the_diff_and_a_summary_and_counts_its_progress_in_matches(
    database_url, conn
):
    league = generate_league(seed=3, tenants=2, players=8, matches=6, side_min=3, side_max=4)
    await play_league(conn, league)
    await drain_stats(database_url)
    clean = cli(database_url, "verify")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines() == ["no drift in 2 tenant(s)"]

    player, goals = await conn.fetchrow(
        "SELECT player_id, goals FROM stats.player_totals ORDER BY player_id LIMIT 1"
    )
    await conn.execute(
        "UPDATE stats.player_totals SET goals = goals + 1 WHERE player_id = $1", player
    )
    drifted = cli(database_url, "verify")
    assert drifted.returncode == 1, drifted.stderr
    assert drifted.stdout.splitlines() == [
        f"player_totals (player_id={player}) goals: expected {goals}, found {goals + 1}",
        "drift: 1 row(s) differ in 2 tenant(s) (player_totals 1)",
    ]
    # the bar counts the matches verify recomputes, not the tenants
    matches = await conn.fetchval(
        "SELECT sum(cardinality(match_ids)) FROM public.tenants, stats.rebuild_scope(id)"
    )
    assert matches > 2
    [bar] = [line for line in drifted.stderr.splitlines() if line.startswith("verifying")]
    assert bar.startswith(f"verifying {matches} match(es) ")
    assert " 100% " in bar and bar.endswith(f" {matches}/{matches}")


def test_verify_says_table_key_and_column_expected_and_found():
    changed = Drift(
        "player_totals",
        {"tenant_id": "t", "player_id": 4},
        {"goals": 3, "games": 2},
        {"goals": 5, "games": 2},
    )
    missing = Drift("match_reports", {"match_id": 9}, None, {"goals": 1})
    assert drift_lines(changed) == [
        "player_totals (tenant_id=t, player_id=4) goals: expected 5, found 3"
    ]
    assert drift_lines(missing) == ["match_reports (match_id=9): missing (expected a row)"]
    assert drift_summary([changed, missing], 2) == (
        "drift: 2 row(s) differ in 2 tenant(s) (match_reports 1, player_totals 1)"
    )
    assert drift_summary([], 3) == "no drift in 3 tenant(s)"


def test_errors_are_cut_between_words():
    assert shorten("short", 60) == "short"
    assert shorten("one two three four", 12) == "one two…"
