"""Trials per minute with 1, 2 and 4 ``simsearch worker`` processes on one study (issue 7).

Each configuration is a fresh study on a Journal file or a fresh PostgreSQL database, run by W
worker processes (``python -m simsearch worker``) to a budget of ``--trials`` trials of a cheap
problem (gmm2d, M = 100, ξ = 1) with each sampler of ``--samplers`` (default: random; ``reinforce``
is ReinforceSampler with the CLI's K = 8, whose workers wait at each generation's end for the
previous generation's last trials). Throughput is counted from the first trial's start to the last
trial's end as recorded in the storage, so interpreter start-up is left out. All configurations run
in one invocation, so their ratios are comparable.

    .venv/bin/python benchmarks/workers_throughput.py [--trials 32] [--samplers random reinforce]
        [--postgres URL] [--overhead-only]

It first prints the per-trial cost of the storage itself in one process (a trivial objective, and
the worker's budget and stale checks on a 32-trial study).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from simsearch.workers import budget_state, fail_stale_trials, open_storage

ROOT = Path(__file__).resolve().parents[1]


def run(url: str, workers: int, trials: int, sampler: str) -> tuple[float, float]:
    """(trials per minute, seconds) of ``workers`` processes finishing ``trials`` trials."""
    cmd = [sys.executable, "-m", "simsearch", "worker", "--storage", url, "--study", "bench",
           "--problem", "gmm2d", "--sampler", sampler, "--trials", str(trials),
           "--n-samples", "100", "--epochs", "1", "--heartbeat", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a worker failed with exit code {p.returncode}")
    study = optuna.load_study(storage=open_storage(url), study_name="bench")
    assert budget_state(study, trials).done
    done = [t for t in study.trials if t.datetime_complete is not None]
    start = min(t.datetime_start for t in done)
    seconds = (max(t.datetime_complete for t in done) - start).total_seconds()
    return 60.0 * trials / seconds, seconds


def overheads(url: str) -> tuple[float, float, float]:
    """Milliseconds per trivial trial, per budget check and per stale check, on a 32-trial study."""
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=5), study_name="overhead")
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=32)
    trial = (time.perf_counter() - start) / 32
    start = time.perf_counter()
    for _ in range(10):
        budget_state(study, 32)
    budget = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    for _ in range(10):
        fail_stale_trials(study, 25)
    stale = (time.perf_counter() - start) / 10
    return 1e3 * trial, 1e3 * budget, 1e3 * stale


def _database(admin, base_url: str, name: str) -> str:
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return base_url.rsplit("/", 1)[0] + "/" + name


def _drop(admin, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--samplers", nargs="+", default=["random"], choices=["random", "reinforce"])
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the per-trial storage overheads (one process, trivial objective)")
    parser.add_argument("--postgres", default=os.environ.get(
        "SIMSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import psycopg2

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{args.trials} trials per configuration")
    admin = psycopg2.connect(args.postgres.replace("+psycopg2", ""), connect_timeout=3)
    admin.autocommit = True
    with tempfile.TemporaryDirectory() as tmp:
        print("| storage | trivial trial (ms) | budget check (ms) | stale check (ms) |")
        print("|---|---|---|---|")
        name = f"simsearch_bench_{uuid.uuid4().hex[:8]}"
        try:
            for storage, url in (("journal", f"journal:{Path(tmp) / 'overhead.log'}"),
                                 ("postgres", _database(admin, args.postgres, name))):
                print(f"| {storage} | " + " | ".join(f"{v:.1f}" for v in overheads(url)) + " |")
        finally:
            _drop(admin, name)
        if args.overhead_only:
            return
        print("| sampler | storage | workers | seconds | trials / min | speed-up vs 1 worker |")
        print("|---|---|---|---|---|---|")
        for sampler, storage in itertools.product(args.samplers, ("journal", "postgres")):
            base = None
            for workers in (1, 2, 4):
                name = f"simsearch_bench_{uuid.uuid4().hex[:8]}"
                if storage == "journal":
                    url = f"journal:{Path(tmp) / (name + '.log')}"
                else:
                    url = _database(admin, args.postgres, name)
                try:
                    rate, seconds = run(url, workers, args.trials, sampler)
                finally:
                    if storage == "postgres":
                        _drop(admin, name)
                base = base or rate
                print(f"| {sampler} | {storage} | {workers} | {seconds:.1f} | {rate:.1f} | "
                      f"{rate / base:.2f} |", flush=True)
    admin.close()


if __name__ == "__main__":
    main()
