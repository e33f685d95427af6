"""The measurements that need no server: the nightly evaluation and storage per instance-day.

Each runs in a process of its own (a subcommand), so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import DEPLOYMENT_ID, FLEET_CORES, KEY_ID, bench_license, fleet_ids

# simulated days start here (UTC); any date works, the clock is a ManualClock
SIM_DAY_START = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0
CORE_CHOICES = (2, 4, 8, 16)


def database_bytes(data_dir: Path) -> tuple[int, int]:
    """(main file, WAL file) sizes of the store's database."""
    from licensing_server.store import DATABASE_NAME

    main = data_dir / DATABASE_NAME
    wal = data_dir / f"{DATABASE_NAME}-wal"
    return (main.stat().st_size if main.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def used_bytes(db: Any) -> dict[str, int]:
    """Bytes in use per table and index (page size less unused space), from SQLite's dbstat."""
    try:
        rows = db.execute("SELECT name, sum(pgsize - unused) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return {}  # SQLite built without dbstat: only the file sizes are reported
    return {str(name): int(used) for name, used in rows}


def max_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sim_service(
    data_dir: Path, key_dir: Path, clock: Any, database_url: str | None = None
) -> tuple[Any, Any]:
    """(LicensingService, store) on `data_dir` (or the PostgreSQL database at `database_url`),
    trusting the key in `key_dir`, default settings."""
    from licensing_server.domain.license import load_public_key
    from licensing_server.postgres_store import PostgresStore
    from licensing_server.service import LicensingService, ServiceSettings
    from licensing_server.store import Store

    public = load_public_key((key_dir / f"{KEY_ID}.public.pem").read_bytes())
    settings = ServiceSettings(
        trusted_keys={KEY_ID: public},
        deployment_id=DEPLOYMENT_ID,
        deployment_time=SIM_DAY_START,
    )
    store = PostgresStore(database_url) if database_url else Store(data_dir)
    return LicensingService(store, clock, settings), store


def cmd_nightly_fill(args: argparse.Namespace) -> int:
    """A day of usage intervals for `instances` instances whose cores change `changes` times.

    The rows are the ones the tracker writes for reports every 10 s (one interval per
    stretch of unchanged cores), stored through Store.write_usage; driving 86 million
    reports through report_usage would take hours and store the same rows.
    """
    from licensing_server.domain.clock import ManualClock

    data_dir, key_dir = Path(args.data_dir), Path(args.key_dir)
    start, midnight = SIM_DAY_START, SIM_DAY_START + DAY
    clock = ManualClock(start + 60)
    text = bench_license(key_dir, start, "BENCH-SIM")[0]
    service, store = _sim_service(data_dir, key_dir, clock, args.database_url)
    service.upload(text)
    rng = random.Random(5)
    # a fresh PostgreSQL database numbers from 1
    next_id = 1 if args.database_url else store.next_interval_id()
    rows: list[tuple[int, str, int, float, float, float | None]] = []
    for instance_id in fleet_ids(args.instances):
        began = start + 60 + rng.uniform(0, 600)
        changes = sorted(rng.uniform(began + 60, midnight - 120) for _ in range(args.changes))
        for ends in [*changes, None]:
            cores = rng.choice(CORE_CHOICES)
            if ends is None:
                # still reporting: its last report came in the last 10 s before midnight
                rows.append(
                    (next_id, instance_id, cores, began, midnight - rng.uniform(0, 10), None)
                )
            else:
                rows.append((next_id, instance_id, cores, began, ends, ends))
                began = ends
            next_id += 1
    for offset in range(0, len(rows), 1000):
        store.write_usage(rows[offset : offset + 1000])
    store.close()
    print(json.dumps({"rows": len(rows), "midnight": midnight}))
    return 0


def cmd_nightly_eval(args: argparse.Namespace) -> int:
    """Start the service on the filled store (as a restart would) and time the midnight tick."""
    from licensing_server.domain.clock import ManualClock

    midnight = SIM_DAY_START + DAY
    clock = ManualClock(midnight + 5)
    service, store = _sim_service(Path(args.data_dir), Path(args.key_dir), clock, args.database_url)
    rss_before = max_rss_mib()
    began = time.perf_counter()
    service.tick()
    seconds = time.perf_counter() - began
    rss_after = max_rss_mib()
    evaluations = store.day_evaluations(1)
    store.close()
    if not evaluations:
        print(json.dumps({"error": "the tick evaluated no day"}))
        return 1
    record = evaluations[0]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": rss_after,
                "rss_growth_mib": rss_after - rss_before,
                "day": record["day"],
                "peak_cores": record["peak_cores"],
                "peak_instances": len(record["peak_instances"]),
            }
        )
    )
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    """`instances` gateways report the same cores every `interval` s, through report_usage."""
    from licensing_server.domain.clock import ManualClock

    data_dir, key_dir = Path(args.data_dir), Path(args.key_dir)
    start = SIM_DAY_START
    clock = ManualClock(start + 1)
    text = bench_license(key_dir, start, "BENCH-SIM")[0]
    service, store = _sim_service(data_dir, key_dir, clock)
    service.upload(text)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    baseline = sum(database_bytes(data_dir))
    used_before = used_bytes(store.db)
    ids = fleet_ids(args.instances)
    spacing = args.interval / len(ids)
    span = args.hours * 3600.0
    reports = 0
    began = time.perf_counter()
    tick = start + 1
    for step in range(int(span // args.interval)):
        for index, instance_id in enumerate(ids):
            clock.set(tick + index * spacing)
            service.report_usage(instance_id, FLEET_CORES, False)
            reports += 1
        tick += args.interval
        if step % 3 == 0:
            # the evaluator's wake-ups (every 5 s in the server; their writes are the same)
            service.tick()
    # a whole day ends with its evaluation, part of a day's storage
    clock.set(max(tick, start + DAY + 5) if span >= DAY else tick)
    service.tick()
    wal_working = database_bytes(data_dir)[1]
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    main, wal = database_bytes(data_dir)
    used_after = used_bytes(store.db)
    growth = {
        name: used - used_before.get(name, 0)
        for name, used in used_after.items()
        if used != used_before.get(name, 0)
    }
    intervals = store.usage_row_count()
    evaluations = len(store.day_evaluations(1000))
    store.close()
    instance_days = args.instances * span / DAY
    print(
        json.dumps(
            {
                "reports": reports,
                "simulate_seconds": time.perf_counter() - began,
                "baseline_bytes": baseline,
                "bytes": main + wal,
                "wal_working_bytes": wal_working,
                "interval_rows": intervals,
                "day_evaluations": evaluations,
                "instance_days": instance_days,
                "file_bytes_per_instance_day": (main + wal - baseline) / instance_days,
                "used_growth": growth,
                "bytes_per_instance_day": (
                    sum(growth.values()) if used_after else main + wal - baseline
                )
                / instance_days,
            }
        )
    )
    return 0
