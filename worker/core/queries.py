"""The project's SQL, loaded once from ``sql/``.

Queries live in ``sql/queries/*.sql`` as named blocks::

    -- name: read_messages
    SELECT ...

migrations in ``sql/migrations/NNNN_title.sql``, and the statistics' functions
in ``sql/stats/<table>.sql`` (repeatable definitions, see :func:`stat_definitions`).
A wheel carries the same folder inside the package (``worker/sql``); a checkout
reads the top-level one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_BLOCK_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def sql_dir() -> Path:
    package = Path(__file__).parent.parent
    packaged = package / "sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


def parse_blocks(text: str) -> dict[str, str]:
    """Split a file of ``-- name: x`` blocks into {name: sql}."""
    parts = _BLOCK_NAME.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            raise ValueError(f"query {name!r} is defined twice")
        blocks[name] = body.strip()
    return blocks


@functools.cache
def queries() -> dict[str, str]:
    """Every named query of ``sql/queries``, by name."""
    merged: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, body in parse_blocks(path.read_text()).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            merged[name] = body
    return merged


def query(name: str) -> str:
    return queries()[name]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered migrations in the order they apply."""
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_title.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found


STATS_SCOPE_FILE = "scope"
"""The shared definitions (scope, marks, bookkeeping) every statistic's file uses."""


@dataclass(frozen=True)
class StatDefinition:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def stat_definitions() -> list[StatDefinition]:
    """The files of ``sql/stats`` in the order they apply: the shared one, then by name.

    Each holds ``CREATE OR REPLACE`` definitions only, so applying one again is
    safe; migrate re-applies a file whenever its checksum changes.
    """
    paths = sorted(
        (sql_dir() / "stats").glob("*.sql"), key=lambda p: (p.stem != STATS_SCOPE_FILE, p.stem)
    )
    return [StatDefinition(path.stem, path.read_text()) for path in paths]
