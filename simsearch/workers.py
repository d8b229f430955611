"""Many worker processes on one study in a shared Optuna storage, with crash recovery.

A *worker* joins (or creates) a study in a storage that several processes or machines share and
runs trials until the study holds ``n_trials`` finished trials in total, whoever ran them
(``simsearch worker`` on the command line, :func:`run_worker` in Python). The samplers keep their
state in the storage (DESIGN §7), so any number of workers can come and go. ``simsearch worker``
joins a study only with the sampler options it began with
(:func:`simsearch.sampler_registry.check_sampler_settings`); :func:`run_worker` does not check.

**Storages** (:func:`open_storage`): ``journal:PATH`` — Optuna's ``JournalStorage`` on a file
(processes on one machine, or machines sharing a file system with working locks);
``redis://HOST:PORT/DB[?prefix=P]`` — ``JournalStorage`` on Redis; anything else is an SQLAlchemy
URL for Optuna's ``RDBStorage`` (``postgresql://``, ``mysql+pymysql://``, ``sqlite:///``), opened
with a heartbeat.

**The trial budget.** Trials are numbered by the storage. Walking them in number order and skipping
trials failed as *stale* (below) and *surplus* trials, the first ``n_trials`` are the study's
budget; they count once finished (COMPLETE, PRUNED, or FAIL for the trial's own reasons: a
simulator exception, a NaN loss). A worker starts a trial only while the budget has a free slot,
and waits (polling) while all slots are taken by running trials, since one of them may turn out
stale and need redoing. Two workers may both see the last free slot and both start a trial: the
one with the higher number finds on entry that it lies beyond the budget, is marked
``simsearch:surplus`` and is pruned at once without running. So a study ends with exactly
``n_trials`` budget trials, and a trial killed with its worker is redone, not lost. A worker stops
when every budget trial has finished and no other trial is running, so that the state it reads at
the end (e.g. a sampler's final policy) is the study's final state.

**Stale trials: the rule.** A worker killed (SIGKILL, power loss) in the middle of a trial leaves
it RUNNING for ever. Before each trial, and while waiting, every worker fails the stale ones:

* storages with a heartbeat (``RDBStorage`` as opened here): Optuna's own rule — a trial whose
  heartbeat is older than ``grace_period`` seconds is stale (``optuna.storages.fail_stale_trials``);
* storages without one (Journal file, Redis): each trial is tagged on entry with its worker's host
  name, boot id, process id and the process's start time, and the worker writes a heartbeat time
  into the trial every ``heartbeat_interval`` seconds while it runs. On the same host (same name
  and boot id) a trial is stale as soon as its process no longer exists (no such pid, a zombie, or
  a different process that reuses the pid — told apart by the start time). From another host, it
  is stale when its latest heartbeat is older than ``grace_period`` seconds. A RUNNING trial that
  carries no tag (its worker died between creating and tagging it, or it was started by a plain
  ``study.optimize``) is stale once it is older than ``grace_period``.

A stale trial is set to FAIL with the user attributes ``fail_phase = "worker"`` and a
``fail_reason``, and recorded in the study's system attributes (``simsearch:stale:<number>``), so it
leaves the budget and its slot is run again. A sampler may wait inside a trial for other workers'
trials (``ReinforceSampler``: a member of generation g waits for generation g − 1); the trial is
tagged and heartbeating meanwhile, so it is never taken for stale, and the waiting sampler runs
:func:`fail_stale_trials` itself, so a generation blocked by a killed worker's trial goes on.
``grace_period`` must exceed the longest pause between two heartbeats (a swapped-out machine, a
loaded one: the worker tests use 10 s on a busy 2-core box); it is a trade-off between wrongly
failing a slow worker and waiting long for a dead one to be noticed.

>>> import optuna, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "study.log")
>>> study = optuna.create_study(storage=open_storage(f"journal:{path}"), study_name="demo",
...                             sampler=optuna.samplers.RandomSampler(seed=0))
>>> report = run_worker(study, lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=5)
>>> len(report.ran), budget_state(study).finished
(5, 5)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "BudgetState",
    "WorkerReport",
    "WorkerTag",
    "budget_state",
    "fail_stale_trials",
    "open_storage",
    "run_worker",
    "stale_reason",
    "tag_trial",
]

_logger = logging.getLogger(__name__)

TAG_KEY = "simsearch:worker"  # trial system attr: the worker that runs the trial
HEARTBEAT_KEY = "simsearch:heartbeat"  # trial system attr: time of the worker's latest heartbeat
SURPLUS_KEY = "simsearch:surplus"  # trial system attr: started beyond the budget, not run
STALE_PREFIX = "simsearch:stale:"  # study system attr per trial failed as stale: the reason


def open_storage(
    url: str, heartbeat_interval: int = 60, grace_period: int | None = None
) -> BaseStorage:
    """An Optuna storage for a URL: ``journal:PATH``, ``redis://…[?prefix=P]`` or an RDB URL.

    RDB storages get Optuna's heartbeat (``heartbeat_interval`` seconds; a trial is stale after
    ``grace_period``, default 5 × the interval) and a callback recording stale trials. A plain
    ``postgresql://`` URL uses psycopg2 when psycopg (3), SQLAlchemy 2.1's default, is missing.
    """
    if not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
        raise ValueError(f"heartbeat_interval must be an int >= 1 (seconds), got {heartbeat_interval!r}")
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if not path:
            raise ValueError(f"storage {url!r}: expected journal:PATH, got an empty path")
        return JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", [""])[0]
        plain = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return JournalStorage(optuna.storages.journal.JournalRedisBackend(plain, prefix=prefix))
    if "://" not in url:
        raise ValueError(
            f"storage {url!r}: expected journal:PATH, redis://HOST:PORT/DB or an SQLAlchemy URL "
            "such as postgresql://user@host/db")
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None and (
            importlib.util.find_spec("psycopg2") is not None):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]  # SQLAlchemy 2.1 wants psycopg 3
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period or 5 * heartbeat_interval,
                                  heartbeat_stale_trial_callback=_record_heartbeat_stale)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:  # workers starting together on an empty database race to create
                raise  # Optuna's tables; the losers retry once the schema exists
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class WorkerTag:
    """Who runs a trial: host name, boot id, process id and that process's start time."""

    host: str
    boot: str
    pid: int
    pid_start: int | None

    @classmethod
    def current(cls) -> WorkerTag:
        """The tag of this process."""
        return cls(socket.gethostname(), _boot_id(), os.getpid(), _process_start(os.getpid()))

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname() and self.boot == _boot_id()

    def process_alive(self) -> bool:
        """Whether the tagged process still runs (meaningful on its own host only)."""
        start = _process_start(self.pid)
        if start is None:  # no /proc entry (or no /proc): ask the kernel
            if os.path.isdir("/proc"):
                return False
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return self.pid_start is None or start == self.pid_start


def tag_trial(storage: BaseStorage, trial_id: int, tag: WorkerTag | None = None) -> None:
    """Tag a running trial with its worker (default: this process), so that the stale rule sees it
    alive while that process lives; a trial tagged already keeps its tag."""
    if TAG_KEY not in storage.get_trial_system_attrs(trial_id):
        tag = tag or WorkerTag.current()
        storage.set_trial_system_attr(trial_id, TAG_KEY, {**tag.__dict__, "started": time.time()})


def stale_reason(trial: FrozenTrial, grace_period: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial of a storage without heartbeat is stale, or None (the module's rule)."""
    if trial.state != TrialState.RUNNING:
        return None
    now = time.time() if now is None else now
    tag_data = trial.system_attrs.get(TAG_KEY)
    if tag_data is None:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - started > grace_period:
            return f"RUNNING for {now - started:.0f} s without a worker tag (grace {grace_period} s)"
        return None
    tag = WorkerTag(tag_data["host"], tag_data["boot"], tag_data["pid"], tag_data["pid_start"])
    if tag.on_this_host():
        if tag.process_alive():
            return None
        return f"its worker (pid {tag.pid} on {tag.host}) has exited"
    last = float(trial.system_attrs.get(HEARTBEAT_KEY, tag_data.get("started", 0.0)))
    if now - last > grace_period:
        return (f"no heartbeat from its worker (pid {tag.pid} on {tag.host}) for {now - last:.0f} s "
                f"(grace {grace_period} s)")
    return None


def fail_stale_trials(study: optuna.Study, grace_period: float) -> list[int]:
    """Fail the study's stale RUNNING trials (see the module's rule); returns their numbers."""
    storage = study._storage
    if is_heartbeat_enabled(storage):
        before = _stale_numbers(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return sorted(_stale_numbers(study) - before)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, grace_period)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_phase", "worker")
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"stale: {reason}")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile, or another worker failed it first
        storage.set_study_system_attr(study._study_id, f"{STALE_PREFIX}{trial.number}", reason)
        _logger.warning("Trial %d failed as stale: %s", trial.number, reason)
        failed.append(trial.number)
    return failed


def _record_heartbeat_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    study._storage.set_study_system_attr(
        study._study_id, f"{STALE_PREFIX}{trial.number}", "no heartbeat within the grace period")


def _stale_numbers(study: optuna.Study) -> set[int]:
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {int(k[len(STALE_PREFIX):]) for k in attrs if k.startswith(STALE_PREFIX)}


@dataclass(frozen=True)
class BudgetState:
    """Where a study stands against a budget of ``n_trials`` (see the module's rule).

    ``budget``: numbers of the budget trials; ``finished``: how many of them have finished;
    ``unfinished``: numbers of every non-stale trial not finished yet, in or beyond the budget;
    ``stale``: numbers of trials failed as stale.
    """

    n_trials: int
    budget: list[int]
    finished: int
    unfinished: list[int]
    stale: set[int]

    @property
    def free(self) -> int:
        return self.n_trials - len(self.budget)

    @property
    def done(self) -> bool:
        return self.finished >= self.n_trials and not self.unfinished


def budget_state(study: optuna.Study, n_trials: int | None = None,
                 trials: Sequence[FrozenTrial] | None = None) -> BudgetState:
    """The budget of ``n_trials`` trials (default: every non-stale, non-surplus trial)."""
    stale = _stale_numbers(study)
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    limit = n_trials if n_trials is not None else len(trials)
    budget, finished, unfinished = [], 0, []
    for t in sorted(trials, key=lambda t: t.number):
        if t.number in stale:
            continue
        if not t.state.is_finished():
            unfinished.append(t.number)
        if SURPLUS_KEY in t.system_attrs or len(budget) >= limit:
            continue
        budget.append(t.number)
        finished += t.state.is_finished()
    return BudgetState(limit, budget, finished, unfinished, stale)


@dataclass
class WorkerReport:
    """What one worker did: trials it ran (budget trials), surplus trials it pruned, and stale
    trials of others (or of killed workers) it failed."""

    ran: list[int] = field(default_factory=list)
    surplus: list[int] = field(default_factory=list)
    failed_stale: list[int] = field(default_factory=list)


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    *,
    heartbeat_interval: float = 60.0,
    grace_period: float | None = None,
    poll_interval: float = 0.5,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> WorkerReport:
    """Run trials of ``study`` until it holds ``n_trials`` finished budget trials in total.

    Args:
        study: a study in a storage other processes may share (RDB heartbeat, or journal).
        objective: the trial objective; an exception fails the trial, not the worker.
        n_trials: the study's total budget (not this worker's share), ≥ 1.
        heartbeat_interval: seconds between heartbeats written into a running trial on storages
            without Optuna's heartbeat (RDB storages use their own interval).
        grace_period: seconds without a heartbeat after which another host's trial is stale on
            such storages (default: 5 × ``heartbeat_interval``).
        poll_interval: seconds between looks at the storage while waiting for other workers.
        callbacks: Optuna ``optimize`` callbacks, called after each trial this worker runs.
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
    if not heartbeat_interval > 0:
        raise ValueError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval!r}")
    grace = 5.0 * heartbeat_interval if grace_period is None else float(grace_period)
    if not grace > heartbeat_interval:
        raise ValueError(
            f"grace_period must exceed heartbeat_interval ({heartbeat_interval} s), got {grace!r}")
    report = WorkerReport()
    tag = WorkerTag.current()
    beat = not is_heartbeat_enabled(study._storage)

    def tagged(trial: optuna.Trial) -> float:
        storage = study._storage
        tag_trial(storage, trial._trial_id, tag)
        if trial.number not in budget_state(study, n_trials).budget:
            storage.set_trial_system_attr(trial._trial_id, SURPLUS_KEY, True)
            report.surplus.append(trial.number)
            raise optuna.TrialPruned(f"the study already has its {n_trials} budget trials")
        report.ran.append(trial.number)
        if not beat:
            return objective(trial)
        with _Heartbeat(storage, trial._trial_id, heartbeat_interval):
            return objective(trial)

    while True:
        report.failed_stale += fail_stale_trials(study, grace)
        state = budget_state(study, n_trials)
        if state.done:
            return report
        if state.free <= 0:
            time.sleep(poll_interval)
            continue
        study.optimize(tagged, n_trials=1, catch=(Exception,), callbacks=list(callbacks),
                       gc_after_trial=False)


class _Heartbeat:
    """Writes the time into a running trial every ``interval`` seconds, from a thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="simsearch-heartbeat")

    def __enter__(self) -> _Heartbeat:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_KEY, time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_KEY, time.time())
            except Exception as exc:  # the storage went away: the grace period will tell
                _logger.warning("heartbeat of trial id %d failed: %s", self.trial_id, exc)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process; None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22: starttime
