"""The schema, once per engine: ``schema/<engine>/NNNN.sql``, applied in order.

File ``NNNN.sql`` takes a database to schema version ``NNNN`` from the one before; a new
database runs them all, an older one those above its version. The highest number is
:data:`SCHEMA_VERSION`, the one place the version is written (as a file name), and every
engine's directory must end at it. Never edit a shipped file: add the next one, to each
engine's directory. (PostgreSQL support starts at version 3, so its first file builds
version 3 whole.) The engines keep the version (SQLite: ``PRAGMA user_version``;
PostgreSQL: the ``schema_version`` table) and apply the files in one transaction.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "migrations", "statements"]

_ROOT = Path(__file__).with_name("schema")
#: Directory of each dialect's files (``Engine.dialect`` -> folder).
_FOLDERS = {"sqlite": "sqlite", "postgresql": "postgres"}
_NAME = re.compile(r"^(\d{4})\.sql$")


@lru_cache(maxsize=None)
def migrations(dialect: str) -> tuple[tuple[int, str], ...]:
    """``(version it brings the schema to, SQL)`` of every file of ``dialect``, in order."""
    folder = _ROOT / _FOLDERS[dialect]
    found = sorted((int(match.group(1)), path) for path in folder.iterdir()
                   if (match := _NAME.match(path.name)) is not None)
    versions = [version for version, _ in found]
    if not versions or versions != list(range(versions[0], versions[0] + len(versions))):
        raise RuntimeError(f"schema files of {dialect} are not numbered in a row: {versions}")
    return tuple((version, path.read_text(encoding="utf-8")) for version, path in found)


def statements(sql: str) -> list[str]:
    """The statements of a schema file (split at ``;`` at the end of a line; comments stay)."""
    return [part.strip() for part in re.split(r";[ \t]*(?:\n|$)", sql) if part.strip()
            and not all(line.strip().startswith("--") or not line.strip() for line in part.splitlines())]


#: The schema version this TeleGate writes: the highest file number.
SCHEMA_VERSION = migrations("sqlite")[-1][0]

for _dialect in _FOLDERS:
    if migrations(_dialect)[-1][0] != SCHEMA_VERSION:
        raise RuntimeError(f"schema/{_FOLDERS[_dialect]} ends at version {migrations(_dialect)[-1][0]},"
                           f" schema/sqlite at {SCHEMA_VERSION}: every engine needs each version's file")
