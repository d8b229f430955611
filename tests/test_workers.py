"""Many workers on one study in a shared storage (issue 7): budget, crashes, samplers' state.

The multi-process tests start real worker processes (a small script calling
:func:`simsearch.workers.run_worker`, and ``python -m simsearch worker``) against a Journal file,
a fresh PostgreSQL database and a Redis prefix (see ``conftest_storages.py``).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest_storages import postgres_url, redis_url, storage_url  # noqa: F401
from optuna.trial import TrialState

from simsearch.workers import (
    SURPLUS_KEY,
    TAG_KEY,
    WorkerTag,
    budget_state,
    fail_stale_trials,
    open_storage,
    run_worker,
    stale_reason,
)

ROOT = Path(__file__).resolve().parents[1]

WORKER_SCRIPT = r'''
import importlib.util, json, os, sys, time
import optuna
from optuna.distributions import FloatDistribution


def load(name, path):
    """Import a module by path: skips the packages' __init__ (and its torch import) at start-up."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.environ["ROOT"], path))
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


optuna.logging.set_verbosity(optuna.logging.ERROR)
args = json.loads(sys.argv[1])
workers = load("workers", "simsearch/workers.py")
open_storage, run_worker = workers.open_storage, workers.run_worker
storage = open_storage(args["storage"], heartbeat_interval=1, grace_period=args["grace"])
if args["mode"] == "reinforce":
    ReinforceSampler = load("reinforce", "samplers/reinforce.py").ReinforceSampler
    space = {"x": FloatDistribution(-1.0, 1.0), "y": FloatDistribution(-1.0, 1.0)}
    sampler = ReinforceSampler(search_space=space, population_size=4, learning_rate=0.1,
                               poll_interval=0.2)

    def objective(trial):
        x, y = trial.suggest_float("x", -1.0, 1.0), trial.suggest_float("y", -1.0, 1.0)
        time.sleep(args["delay"])
        return -(x - 0.5) ** 2 - (y + 0.3) ** 2
else:
    from samplers.autosimulate import AutoSimulateSampler
    from simsearch.faults import FaultySimulator
    from simsearch.problems import get

    problem = get("gmm2d")
    objective = problem.objective(accumulate=True, seed=0, checkpoint_path=args["checkpoint"],
                                  n_samples=50, epochs=1)
    objective.simulator = FaultySimulator(problem.simulator, delay_s=args["delay"])
    sampler = AutoSimulateSampler("linear", init=problem.simulator)
study = optuna.load_study(storage=storage, study_name="w", sampler=sampler,
                          pruner=optuna.pruners.NopPruner())
report = run_worker(study, objective, args["n_trials"], heartbeat_interval=0.5,
                    grace_period=args["grace"], poll_interval=0.05)
out = {"pid": os.getpid(), "ran": report.ran, "surplus": report.surplus}
if args["mode"] == "reinforce":
    policy = sampler.policy(study)
    out["policy"] = {"generation": policy.generation, "params": policy.params}
print("RESULT " + json.dumps(out), flush=True)
'''


def _start(script: Path, **args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _kill_mid_trial(study: optuna.Study, victim: subprocess.Popen, after: int) -> int:
    """SIGKILL ``victim`` while it runs a trial numbered >= ``after``; that trial's number."""
    deadline = time.time() + 120
    while time.time() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            tag = t.system_attrs.get(TAG_KEY)
            if t.number >= after and tag and tag["pid"] == victim.pid:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                return t.number
        time.sleep(0.02)
    raise AssertionError("the victim never ran a late enough trial")


def _reinforce_study(url: str, tmp_path: Path, n_workers: int, kill_after: int | None = None):
    """Run 40 trials of ReinforceSampler (K = 4) with ``n_workers`` worker processes; with
    ``kill_after``, SIGKILL the first worker mid-trial (a trial numbered >= kill_after) and start a
    replacement. Returns the study, the workers' results, the killed trial's number and the chain
    audited against an independent replay (``tests/test_reinforce.py::audit_chain``)."""
    from test_reinforce import audit_chain

    from samplers.reinforce import ReinforceSampler

    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="w", direction="maximize")
    # a grace period of 10 s: heartbeats of live workers can lag seconds on a loaded 2-core box
    args = {"storage": url, "mode": "reinforce", "n_trials": 40, "delay": 0.2, "grace": 10}
    procs = [_start(script, **args) for _ in range(n_workers)]
    killed = None
    if kill_after is not None:
        killed = _kill_mid_trial(study, procs[0], after=kill_after)
        procs = procs[1:] + [_start(script, **args)]
    results = [_result(p) for p in procs]
    chain = audit_chain(study, ReinforceSampler(population_size=4, learning_rate=0.1), 4)
    return study, results, killed, chain


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_reinforce_four_workers_ten_generations(backend, request, tmp_path):
    """4 processes × ReinforceSampler (K = 4) × 10 generations: 40 completed trials, every member
    of generation g drawn from the policy after update g − 1 (the workers waited), each generation
    updated exactly once from its 4 members, and every process reads the same final ω."""
    url = f"journal:{tmp_path / 'study.log'}" if backend == "journal" else (
        request.getfixturevalue("postgres_url"))
    study, results, _, chain = _reinforce_study(url, tmp_path, 4)
    trials = study.get_trials(deepcopy=False)
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    assert complete == list(range(40))
    assert all(SURPLUS_KEY in t.system_attrs for t in trials if t.number >= 40)
    assert sorted(chain) == list(range(11))  # policies 0..10: 10 updates
    for g in range(10):
        assert chain[g]["members"] == list(range(4 * g, 4 * g + 4))
        assert chain[g + 1]["from"] == tuple(range(4 * g, 4 * g + 4))
    finals = [r["policy"] for r in results]
    assert all(f == finals[0] for f in finals) and finals[0]["generation"] == 10
    assert len({r["pid"] for r in results if r["ran"]}) >= 2  # the work was shared


def test_reinforce_four_workers_with_a_kill(storage_url, tmp_path):  # noqa: F811
    """4 processes × ReinforceSampler (K = 4); one SIGKILLed mid-trial and replaced: the study
    ends with exactly 40 completed budget trials, the killed trial failed as stale and counted as a
    finished member of its generation that no update uses, every generation updated exactly once,
    and every process reads the same final policy."""
    study, results, killed, chain = _reinforce_study(storage_url, tmp_path, 4, kill_after=8)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    state = budget_state(study, 40)
    assert killed in state.stale and killed not in state.budget
    assert state.finished == 40 and not state.unfinished
    assert all(by_number[n].state == TrialState.COMPLETE for n in state.budget)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 40
    assert all(SURPLUS_KEY in t.system_attrs for t in trials
               if t.number not in state.budget and t.number != killed)

    assert sorted(chain) == list(range(11))  # trials 0..40 cover generations 0..9 and one more
    g_killed = killed // 4
    for g in range(10):
        members = tuple(n for n in range(4 * g, 4 * g + 4) if n != killed)
        assert chain[g + 1]["from"] == members, (g, chain[g + 1]["from"])
    assert len(chain[g_killed + 1]["from"]) == 3
    finals = [r["policy"] for r in results]
    assert all(f == finals[0] for f in finals) and finals[0]["generation"] == 10


def test_autosimulate_killed_and_restarted_resumes_psi_and_model(tmp_path):
    """AutoSimulate killed after iteration t restarts in a new process: its first trial proposes
    the ψ_{t+1} stored by the last completed trial and the model continues from the checkpoint."""
    url = f"journal:{tmp_path / 'study.log'}"
    ckpt = tmp_path / "model.pt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    study = optuna.create_study(storage=open_storage(url), study_name="w", direction="maximize")
    args = {"storage": url, "mode": "autosimulate", "n_trials": 4, "checkpoint": str(ckpt),
            "delay": 0.3, "grace": 2}
    first = _start(script, **args)
    killed = _kill_mid_trial(study, first, after=2)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    head = max(complete, key=lambda t: t.system_attrs["autosimulate:step"])
    stored_psi = head.system_attrs["autosimulate:psi_next"]
    saved = torch.load(ckpt, weights_only=True)
    assert saved["trials_seen"] == len(complete) >= 2

    _result(_start(script, **args))
    trials = study.get_trials(deepcopy=False)
    assert trials[killed].state == TrialState.FAIL
    resumed = trials[killed + 1]
    assert resumed.state == TrialState.COMPLETE and resumed.params == stored_psi
    assert resumed.system_attrs["autosimulate:parent"] == head.number
    final = torch.load(ckpt, weights_only=True)
    assert final["trials_seen"] == sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert not all(torch.equal(final["state_dict"][k], v) for k, v in saved["state_dict"].items())


def test_cli_workers_share_a_journal_study(tmp_path):
    """Two ``simsearch worker`` processes on one Journal file finish the study's 6 trials."""
    log = tmp_path / "study.log"
    cmd = [sys.executable, "-m", "simsearch", "worker", "--storage", f"journal:{log}", "--study", "s",
           "--problem", "gmm2d", "--sampler", "random", "--trials", "6", "--n-samples", "50",
           "--epochs", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("has 6/6 trials finished" in out for out, _ in outs)
    study = optuna.load_study(storage=open_storage(f"journal:{log}"), study_name="s")
    state = budget_state(study, 6)
    assert state.done and len(state.budget) == 6
    assert all(study.trials[n].state == TrialState.COMPLETE for n in state.budget)
    # which worker ran which trial depends on timing (a fast first worker may run them all); a
    # trial beyond the budget can only come from both taking the last slot, and is marked surplus
    extra = [t for t in study.trials if t.number not in state.budget]
    assert all(SURPLUS_KEY in t.system_attrs for t in extra)
    assert {t.system_attrs[TAG_KEY]["pid"] for t in study.trials} <= {p.pid for p in procs}


# -- the stale rule and the budget, in one process ---------------------------------------------------
def _journal_study(tmp_path) -> optuna.Study:
    return optuna.create_study(storage=open_storage(f"journal:{tmp_path / 's.log'}"),
                               sampler=optuna.samplers.RandomSampler(seed=0))


def _running(study: optuna.Study, tag: dict | None, heartbeat: float | None = None):
    trial = study.ask()
    if tag is not None:
        study._storage.set_trial_system_attr(trial._trial_id, TAG_KEY, tag)
    if heartbeat is not None:
        study._storage.set_trial_system_attr(trial._trial_id, "simsearch:heartbeat", heartbeat)
    return trial


def test_stale_rule_dead_process_here_and_silent_worker_elsewhere(tmp_path):
    study = _journal_study(tmp_path)
    me = WorkerTag.current()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    alive = _running(study, {**me.__dict__, "started": now})
    exited = _running(study, {**WorkerTag(me.host, me.boot, dead.pid, None).__dict__, "started": now})
    reused = _running(study, {**WorkerTag(me.host, me.boot, me.pid, (me.pid_start or 0) + 1).__dict__,
                              "started": now})
    far_fresh = _running(study, {"host": "elsewhere", "boot": "b", "pid": 1, "pid_start": 5,
                                 "started": now - 100}, heartbeat=now - 1)
    far_silent = _running(study, {"host": "elsewhere", "boot": "b", "pid": 1, "pid_start": 5,
                                  "started": now - 100}, heartbeat=now - 50)
    untagged = _running(study, None)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert stale_reason(frozen[alive.number], 30) is None
    assert "has exited" in stale_reason(frozen[exited.number], 30)
    assert "has exited" in stale_reason(frozen[reused.number], 30)  # pid reused by another process
    assert stale_reason(frozen[far_fresh.number], 30) is None
    assert "no heartbeat" in stale_reason(frozen[far_silent.number], 30)
    assert stale_reason(frozen[untagged.number], 30) is None
    assert "without a worker tag" in stale_reason(frozen[untagged.number], 30, now=now + 31)

    assert fail_stale_trials(study, 30) == [exited.number, reused.number, far_silent.number]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    assert trials[1].user_attrs["fail_phase"] == "worker"
    state = budget_state(study, 2)
    assert state.stale == {1, 2, 4} and state.budget == [0, 3] and state.free == 0


def test_budget_skips_stale_and_surplus_trials_and_a_worker_redoes_lost_slots(tmp_path):
    """A worker joining a study whose earlier trials include a stale one and a surplus one runs
    exactly the trials needed for the budget."""
    study = _journal_study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = WorkerTag.current()
    _running(study, {**WorkerTag(me.host, me.boot, dead.pid, None).__dict__, "started": time.time()})
    surplus = study.ask()
    study._storage.set_trial_system_attr(surplus._trial_id, SURPLUS_KEY, True)
    study.tell(surplus, state=TrialState.PRUNED)
    report = run_worker(study, lambda t: t.suggest_float("x", 0, 1), n_trials=5, poll_interval=0.01)
    assert report.failed_stale == [2] and report.ran == [4, 5, 6] and report.surplus == []
    state = budget_state(study, 5)
    assert state.budget == [0, 1, 4, 5, 6] and state.finished == 5 and state.done
    assert run_worker(study, lambda t: 0.0, n_trials=5).ran == []  # already done: nothing to run


def test_open_storage_urls_and_errors(tmp_path, postgres_url):  # noqa: F811
    from optuna.storages import JournalStorage, RDBStorage

    assert isinstance(open_storage(f"journal:{tmp_path / 'a.log'}"), JournalStorage)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # workers racing to create the schema
        assert all(isinstance(s, RDBStorage) for s in pool.map(open_storage, [postgres_url] * 4))
    rdb = open_storage(postgres_url, heartbeat_interval=3)
    assert isinstance(rdb, RDBStorage) and rdb.get_heartbeat_interval() == 3
    assert rdb.grace_period == 15
    with pytest.raises(ValueError, match="expected journal:PATH"):
        open_storage("study.db")
    with pytest.raises(ValueError, match="empty path"):
        open_storage("journal:")
    with pytest.raises(ValueError, match="heartbeat_interval must be an int >= 1"):
        open_storage("sqlite:///x.db", heartbeat_interval=0)
    study = _journal_study(tmp_path)
    with pytest.raises(ValueError, match="n_trials must be an int >= 1, got 0"):
        run_worker(study, lambda t: 0.0, n_trials=0)
    with pytest.raises(ValueError, match="grace_period must exceed"):
        run_worker(study, lambda t: 0.0, n_trials=1, heartbeat_interval=10, grace_period=5)


def test_redis_url_prefix_is_a_separate_journal(redis_url):  # noqa: F811
    study = optuna.create_study(storage=open_storage(redis_url), study_name="r")
    run_worker(study, lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    other = redis_url.replace("prefix=", "prefix=other-")
    assert optuna.get_all_study_names(open_storage(redis_url)) == ["r"]
    assert optuna.get_all_study_names(open_storage(other)) == []
