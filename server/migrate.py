"""`license-server migrate`: move a SQLite deployment into an empty PostgreSQL database.

Everything the data directory's database holds is copied in one transaction:
the deployment ID and date, every license with its history, the runtime state
and its overage episode, the evaluated days, the state changes, the spans the
service ran and the usage intervals. A target that holds anything is refused,
so a deployment is never merged into another. The server must be stopped: the
SQLite database is opened exclusively, as the server opens it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from licensing_server.config import env_name, redact_database_url
from licensing_server.migrations import TABLES
from licensing_server.storage import StoreError
from licensing_server.store import DATABASE_NAME, Store


class MigrationRefused(Exception):
    pass


def migrate(data_dir: Path, database_url: str) -> dict[str, int]:
    """Copy the deployment in `data_dir` into the database; the rows copied per table."""
    from licensing_server.postgres_store import PostgresStore

    if not (data_dir / DATABASE_NAME).is_file():
        raise MigrationRefused(f"{data_dir} holds no {DATABASE_NAME}: nothing to move")
    source = Store(data_dir)
    try:
        if source.deployment() is None:
            raise MigrationRefused(f"{data_dir / DATABASE_NAME} holds no deployment yet")
        tables = source.export_tables()
    finally:
        source.close()
    target = PostgresStore(database_url)
    try:
        target.import_tables(tables)
    finally:
        target.close()
    return {table: len(tables[table]) for table in TABLES}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="license-server migrate",
        description="Copy a deployment from a SQLite data directory into an empty PostgreSQL "
        "database, for running several replicas. Stop the server first.",
    )
    root.add_argument(
        "--from-data-dir", required=True, metavar="DIR", help="the data directory to copy"
    )
    root.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"the PostgreSQL database to copy into (or {env_name('database_url')})",
    )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = args.database_url or os.environ.get(env_name("database_url"))
    if not url:
        print("license-server migrate: --database-url is required", file=sys.stderr)
        return 2
    try:
        copied = migrate(Path(args.from_data_dir), url)
    except (MigrationRefused, StoreError) as error:
        print(f"license-server migrate: {error}", file=sys.stderr)
        return 1
    print(f"copied {args.from_data_dir} into {redact_database_url(url)}:")
    for table, rows in copied.items():
        print(f"  {table}: {rows} rows")
    return 0
