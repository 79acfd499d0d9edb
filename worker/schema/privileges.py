"""What ``migrate`` says when the database refuses it a right: the GRANT that fixes it."""

from __future__ import annotations

import re

from worker.queue.priorities import bulk_queue_name

_OBJECT = re.compile(r"(?:permission denied for|must be owner of) (\w+) ([\w.\"]+)")


def privilege_hint(error: str, role: str, queue_name: str) -> str:
    """One line: what was refused, and the GRANT (run by its owner) that fixes it."""
    match = _OBJECT.search(error)
    kind, name = (match.group(1), match.group(2)) if match else ("", "")
    if kind == "extension" or (kind == "schema" and name == "pgmq") or "pgmq" in name:
        fix = (
            f"pgmq belongs to another role: as a superuser (or the extension's owner) run "
            f"SELECT pgmq.create('{queue_name}'); "
            f"SELECT pgmq.create('{bulk_queue_name(queue_name)}'); "
            f"GRANT USAGE ON SCHEMA pgmq TO {role}; "
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON ALL TABLES IN SCHEMA pgmq "
            f"TO {role}; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgmq TO {role}"
        )
    elif kind == "database":
        fix = f"GRANT CREATE ON DATABASE {name} TO {role}"
    elif kind == "schema":
        fix = f"GRANT USAGE, CREATE ON SCHEMA {name} TO {role}"
    elif kind == "table" and error.startswith("must be owner"):
        fix = (
            f"run migrate as the owner of {name}, or have it run ALTER TABLE {name} OWNER TO {role}"
        )
    elif kind == "table":
        fix = f"GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON {name} TO {role}"
    else:
        fix = "see README, 'Database rights'"
    return f"migrate as role {role}: {error}. Fix: {fix}"
