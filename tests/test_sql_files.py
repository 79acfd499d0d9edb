"""The SQL in sql/: every named query is used, every query used exists."""

from __future__ import annotations

import re
from pathlib import Path

from worker.core.queries import migrations, queries
from worker.stats.aggregations import TABLES

WORKER = Path(__file__).resolve().parent.parent / "worker"
NAMED_USE = re.compile(r"""(?:query|queue_query)\(\s*["'](\w+)["']""")


def _python_sources() -> str:
    return "\n".join(path.read_text() for path in WORKER.rglob("*.py"))


def test_every_query_the_code_names_exists():
    used = set(NAMED_USE.findall(_python_sources()))
    assert used - set(queries()) == set()


def test_every_named_query_is_used():
    used = set(NAMED_USE.findall(_python_sources())) | {f"refresh_{table}" for table in TABLES}
    assert set(queries()) - used == set()


def test_migrations_are_numbered_from_one_without_gaps():
    versions = [m.version for m in migrations()]
    assert versions == sorted(set(versions))
    assert versions == list(range(1, len(versions) + 1))
