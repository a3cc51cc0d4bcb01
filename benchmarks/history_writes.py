"""What recording one more epoch costs as a job's history grows, beside the one-JSON-value design it replaced.

    python -m benchmarks.history_writes                       # SQLite, and PostgreSQL if reachable
    python -m benchmarks.history_writes --sizes 1000 10000    # quicker
    python -m benchmarks.history_writes --pg-url postgresql+psycopg://root@127.0.0.1:5432/test

For each history length n, a job holding n epochs records epoch n + 1 the way a worker does
(``training_results.record_epochs`` in one transaction: lock the job, insert the row, move its progress); the
reference, in the same database and run, is the design before migration 0002: the same transaction, but the
history as one JSON value on a job row, loaded, appended to and written back whole. Median of 7 writes each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, select, update  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from service.db.models import Job, Model, Owner  # noqa: E402
from service.db.session import make_engine  # noqa: E402
from service.migrate import upgrade_to_head  # noqa: E402
from service.services import training_results  # noqa: E402

ROW = {"loss": 0.1234567, "accuracy": 0.9876, "val_loss": 0.2345678, "val_accuracy": 0.95, "learning_rate": 0.001,
       "grad_norms": {"dense": 0.8371234, "dense_1": 0.21534, "dense_2": 0.1123}, "seconds": 0.00123}
REPEATS = 7

legacy = MetaData()
legacy_jobs = Table("bench_legacy_jobs", legacy, Column("id", String(36), primary_key=True),
                    Column("epoch", Integer), Column("history", JSON))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(url: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    upgrade_to_head(url)
    engine = make_engine(url)
    legacy.create_all(engine)
    sf = sessionmaker(engine, expire_on_commit=False)
    out = []
    try:
        with sf() as s, s.begin():
            owner = Owner(name="bench")
            s.add(owner)
            s.flush()
            model = Model(owner_id=owner.id, name="bench", input_shape=[2], spec={}, summary={}, latest_version=0)
            s.add(model)
            s.flush()
            owner_id, model_id = owner.id, model.id
        for n in sizes:
            with sf() as s, s.begin():
                job = Job(owner_id=owner_id, model_id=model_id, status="running", config={}, epochs=n + REPEATS,
                          worker="bench")
                s.add(job)
                s.flush()
                job_id = job.id
                training_results.record_epochs(s, job_id, [{**ROW, "epoch": e} for e in range(1, n + 1)], "bench")
                s.execute(legacy_jobs.insert().values(id=job_id, epoch=n,
                                                      history=[{**ROW, "epoch": e} for e in range(1, n + 1)]))
            ours, before = [], []
            for k in range(1, REPEATS + 1):
                epoch = n + k

                def record():
                    with sf() as s, s.begin():
                        assert training_results.record_epochs(s, job_id, [{**ROW, "epoch": epoch}], "bench")

                def record_legacy():
                    with sf() as s, s.begin():
                        q = select(legacy_jobs.c.history).where(legacy_jobs.c.id == job_id).with_for_update()
                        history = s.execute(q).scalar_one()
                        history = [r for r in history if r["epoch"] < epoch] + [{**ROW, "epoch": epoch}]
                        s.execute(update(legacy_jobs).where(legacy_jobs.c.id == job_id)
                                  .values(history=history, epoch=epoch))

                ours.append(_timed(record))
                before.append(_timed(record_legacy))
            out.append((n, statistics.median(ours), statistics.median(before)))
    finally:
        legacy.drop_all(engine)
        engine.dispose()
    return out


def report(name: str, rows: list[tuple[int, float, float]]) -> None:
    print(f"\n{name}: recording one epoch, median of {REPEATS} (ms)")
    print(f"{'epochs stored':>14s} {'job_epochs':>11s} {'one JSON value':>15s} {'ratio':>7s}")
    for n, ours, before in rows:
        print(f"{n:>14,d} {ours * 1e3:>11.2f} {before * 1e3:>15.2f} {before / ours:>6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 50000])
    parser.add_argument("--pg-url", default=os.environ.get("BACKPROP_BENCH_PG_URL"))
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "BACKPROP_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="where a scratch database is created (and dropped) when --pg-url is not given")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report("SQLite", measure(f"sqlite:///{tmp}/history.db", args.sizes))
    if args.no_pg:
        return
    if args.pg_url:
        report("PostgreSQL", measure(args.pg_url, args.sizes))
        return
    try:
        url = scratch_pg_database(args.pg_admin_url)
    except Exception as exc:  # noqa: BLE001 - any connection failure means: no PostgreSQL here
        print(f"\nPostgreSQL is not reachable ({type(exc).__name__}): SQLite only")
        return
    try:
        report("PostgreSQL", measure(url, args.sizes))
    finally:
        drop_pg_database(args.pg_admin_url, url)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def scratch_pg_database(admin_url: str) -> str:
    """A new, empty database next to ``admin_url``'s; returns its SQLAlchemy URL."""
    import uuid

    import psycopg

    name = f"bp_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rpartition('/')[0]}/{name}"


def drop_pg_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
