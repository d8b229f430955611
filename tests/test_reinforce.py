"""ReinforceSampler: gradient against closed forms, storage-backed state (threads, processes,
restarts), fallback, reproducibility and validation."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import time
import warnings

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from scipy.stats import norm

from samplers import reinforce
from samplers.reinforce import _KEY, ReinforceSampler, _Policy, _policy_id

optuna.logging.set_verbosity(optuna.logging.WARNING)
LOW, HIGH = -2.0, 2.0
SPACE = {"a": FloatDistribution(LOW, HIGH), "b": FloatDistribution(LOW, HIGH)}
CENTRE = np.array([0.5, -0.3])


def neg_sq_distance(trial: optuna.Trial) -> float:
    """R(ψ) = −‖ψ − c‖², ψ = (a, b)."""
    psi = np.array([trial.suggest_float(n, LOW, HIGH) for n in SPACE])
    return -float(((psi - CENTRE) ** 2).sum())


def audit_chain(study: optuna.Study, sampler: ReinforceSampler, k: int) -> dict[int, dict]:
    """Replay the (single) policy chain in ``study`` independently and check it against storage:
    generation g is trials gK … gK + K − 1; the update of g uses exactly its COMPLETE members drawn
    from g's policy whose parameters were not fixed; every stored copy of a generation's policy
    equals the replay (so each generation was updated exactly once) and names the trials it used;
    every record names its generation by its number. Replays as far as every generation has
    finished. Returns ``{generation: {"policy", "policy_id", "members", "from"}}`` where members
    are the trials drawn from that policy and ``from`` the trials its update used. A chain with
    ``restart_every`` is stepped with the sampler's update (step, then restart at G's multiples)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    records = {n: t.system_attrs[_KEY] for n, t in trials.items() if _KEY in t.system_attrs}
    assert all(r["generation"] == n // k and r["k"] == k for n, r in records.items())
    stored: dict[int, list[dict]] = {}
    for r in records.values():
        if "policy" in r:
            stored.setdefault(r["drawn_from"], []).append(r)
    (first,) = {json.dumps(r["policy"]) for r in stored[0]}
    policy, used = _Policy.from_json(json.loads(first)), ()
    initial = policy
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    chain: dict[int, dict] = {}
    for g in range(len(trials) // k + 1):
        pid = _policy_id(policy.to_json())
        for r in stored.get(g, []):
            assert r["policy"] == policy.to_json() and r["policy_id"] == pid, f"generation {g}"
            if g > 0:
                assert tuple(r["from_trials"]) == used, f"generation {g}: {r['from_trials']} != {used}"
        members = [n for n in range(g * k, (g + 1) * k)
                   if n in records and records[n]["policy_id"] == pid]
        chain[g] = {"policy": policy.to_json(), "policy_id": pid, "members": members, "from": used}
        if not all(n in trials and trials[n].state.is_finished() for n in range(g * k, (g + 1) * k)):
            break
        used = tuple(n for n in members if trials[n].state == TrialState.COMPLETE
                     and "fixed_params" not in trials[n].system_attrs)
        draws = np.array([records[n]["draw"] for n in used]).reshape(len(used), -1)
        rewards = np.array([sign * trials[n].value for n in used])
        policy = sampler._update(policy, initial, draws, rewards, g)[1]  # the step if K' > 0
    return chain


def chain_means(chain: dict[int, dict]) -> np.ndarray:
    return np.array([chain[g]["policy"]["mean"] for g in sorted(chain)])


# -- the gradient (Eq. 3–4) against closed forms -------------------------------------------------
@pytest.mark.parametrize("learn_sigma, init, lr_decay",
                         [(False, (-1.0, 1.0), None), (True, tuple(CENTRE), None),
                          (False, (-1.0, 1.0), 10.0)])
def test_update_follows_the_analytic_gradient_of_expected_reward(learn_sigma, init, lr_decay):
    """R = −‖ψ − c‖² under π = N(ω, σ²) in unit-box coordinates u (ψ = low + r u, r = high − low):
    E_π[R] = −Σ_i (low + r ω_i − c_i)² − Σ_i r² σ_i², so ∂/∂ω_i = −2 r (ψ̄_i − c_i) and
    ∂/∂log σ_i = −2 r² σ_i². With SGD, (θ_{g+1} − θ_g)/lr_g is the sampler's estimate, lr_g =
    lr / √(1 + g/τ) with ``lr_decay`` τ; averaged over many generations it must match the closed
    form (ω barely moves: lr is tiny). The σ part is checked at ω = c, where it is the whole
    gradient."""
    k, lr, generations = 8, 1e-4, 100
    sampler = ReinforceSampler(search_space=SPACE, init=dict(zip(SPACE, init, strict=True)),
                               sigma=0.05, lr_decay=lr_decay,
                               learn_sigma=learn_sigma, optimizer="sgd", learning_rate=lr,
                               population_size=k, seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(neg_sq_distance, n_trials=k * generations)
    chain = audit_chain(study, sampler, k)
    policies = [chain[g]["policy"] for g in sorted(chain)]
    theta = np.array([p["mean"] + p["log_sigma"] for p in policies])
    g = np.arange(1, len(theta) - 1)[:, None]  # the first update uses its own mean as baseline
    estimates = np.diff(theta, axis=0)[1:] / (lr / np.sqrt(1 + g / (lr_decay or math.inf)))
    r = HIGH - LOW
    mean, sigma = theta[1:-1, :2], np.exp(theta[1:-1, 2:])
    analytic = np.concatenate([-2 * r * (LOW + r * mean - CENTRE), -2 * r**2 * sigma**2], axis=1)
    if not learn_sigma:
        analytic[:, 2:] = 0.0
    error = (estimates - analytic).mean(axis=0)
    stderr = (estimates - analytic).std(axis=0, ddof=1) / math.sqrt(len(estimates))
    assert np.all(np.abs(error) <= 4 * stderr + 1e-12), (error, stderr)
    part = slice(2, 4) if learn_sigma else slice(0, 2)  # where the gradient is far from zero
    target = analytic.mean(axis=0)[part]
    assert np.linalg.norm(error[part]) < 0.15 * np.linalg.norm(target), (error, target)


def test_clipped_draws_do_not_bias_the_gradient():
    """R(ψ) = ψ on [0, 1] near the upper bound: proposals are clipped, and the sampler must return
    the gradient of E[R(clip(x))] = E[min(x, 1)], which is Φ((1 − ω)/σ), not the unclipped
    objective's 1 nor what clipped draws in log π would give."""
    k, lr, generations, omega, sigma = 8, 1e-5, 100, 0.9, 0.2
    space = {"x": FloatDistribution(0.0, 1.0)}
    sampler = ReinforceSampler(search_space=space, init={"x": omega}, sigma=sigma,
                               optimizer="sgd", learning_rate=lr, population_size=k, seed=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=k * generations)
    draws = np.array([t.system_attrs[_KEY]["draw"][0] for t in study.trials])
    assert (draws > 1).mean() > 0.2 and max(t.params["x"] for t in study.trials) <= 1.0
    estimates = np.diff(chain_means(audit_chain(study, sampler, k))[:, 0])[1:] / lr
    expected = norm.cdf((1 - omega) / sigma)
    stderr = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - expected) <= 4 * stderr, (estimates.mean(), expected, stderr)
    assert abs(estimates.mean() - expected) < 0.1 * expected


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_learns_the_optimum_for_either_direction(direction):
    sign = 1.0 if direction == "maximize" else -1.0
    sampler = ReinforceSampler(search_space=SPACE, init={"a": -1.5, "b": 1.5}, population_size=8,
                               learning_rate=0.05, learn_sigma=True, seed=3)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(lambda t: sign * neg_sq_distance(t), n_trials=8 * 60)
    learned = sampler.policy(study)
    assert learned.generation == 60  # 60 generations finished: 60 updates
    assert np.allclose([learned.params["a"], learned.params["b"]], CENTRE, atol=0.2), learned
    assert np.all(learned.sigma < math.sqrt(0.05))  # σ shrinks near the optimum when learned


def test_sigma_in_parameter_units_divides_by_each_range():
    """sigma_units="param": σ is in each parameter's own units (log units for a log-scaled one),
    so the unit-box σ_i is σ / (high_i − low_i); "unit" gives every coordinate the same σ."""
    space = {"wide": FloatDistribution(-5.0, 5.0), "narrow": FloatDistribution(0.05, 0.95),
             "log": FloatDistribution(0.1, 4.0, log=True)}
    expected = math.sqrt(0.05) / np.array([10.0, 0.9, math.log(40.0)])
    for units, sigma in (("param", expected), ("unit", np.full(3, math.sqrt(0.05)))):
        sampler = ReinforceSampler(search_space=space, sigma=math.sqrt(0.05), sigma_units=units,
                                   population_size=2, seed=0)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: sum(t.suggest_float(n, d.low, d.high, log=d.log)
                                     for n, d in space.items()), n_trials=1)
        stored = study.trials[0].system_attrs[_KEY]["policy"]["log_sigma"]
        assert np.allclose(np.exp(stored), sigma), (units, np.exp(stored))
        assert np.allclose(sampler.policy(study).sigma, sigma)


def test_standardised_advantages_make_the_update_invariant_to_the_reward_scale():
    """With normalize_advantage, R and 100 R + 7 give the same chain of policies (SGD, whose step
    otherwise scales with R); without it they differ. Equal rewards leave ω where it is."""
    def chain(scale, offset, normalize, objective=neg_sq_distance):
        sampler = ReinforceSampler(search_space=SPACE, init={"a": -1.0, "b": 1.0}, optimizer="sgd",
                                   learning_rate=0.01, population_size=4,
                                   normalize_advantage=normalize, seed=5)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: scale * objective(t) + offset, n_trials=4 * 6)
        return chain_means(audit_chain(study, sampler, 4))

    assert np.allclose(chain(1.0, 0.0, True), chain(100.0, 7.0, True), rtol=0, atol=1e-9)
    assert not np.allclose(chain(1.0, 0.0, False), chain(100.0, 7.0, False), rtol=0, atol=1e-3)
    flat = chain(1.0, 0.0, True, objective=lambda t: neg_sq_distance(t) * 0.0)
    assert np.allclose(flat, flat[0]) and len(flat) == 7


def test_lr_decay_scales_each_generations_step():
    """With lr_decay = τ, generation g's step is the constant-lr step scaled by 1/√(1 + g/τ) (SGD:
    the displacement of ω itself; Adam: the same step as a sampler with lr / √(1 + g/τ) and the
    same moments). Generation 0 steps with the full lr."""
    policy = _Policy(np.array([0.4, 0.6]), np.log(np.array([0.1, 0.1])), 0.0, None)
    draws, rewards = np.array([[0.5, 0.5], [0.3, 0.7], [0.45, 0.62]]), np.array([1.0, -1.0, 0.5])
    def step(g, lr=0.01, optimizer="sgd", start=policy, **options):
        sampler = ReinforceSampler(search_space=SPACE, learning_rate=lr, optimizer=optimizer,
                                   learn_sigma=True, population_size=3, **options)
        return sampler._step(start, draws, rewards, g)

    constant = step(7).mean - policy.mean
    assert np.linalg.norm(constant) > 1e-4
    for g, tau in ((0, 5.0), (7, 5.0), (40, 2.0)):
        decayed = step(g, lr_decay=tau).mean - policy.mean
        assert np.allclose(decayed, constant / math.sqrt(1 + g / tau), rtol=1e-12, atol=0)
    adam = _Policy(policy.mean, policy.log_sigma, 0.0, (np.full(4, 0.3), np.full(4, 0.2), 5))
    decayed = step(12, lr=0.02, optimizer="adam", start=adam, lr_decay=4.0)
    same = step(12, lr=0.01, optimizer="adam", start=adam)
    assert np.allclose(np.concatenate([decayed.mean, decayed.log_sigma]),
                       np.concatenate([same.mean, same.log_sigma]), rtol=1e-12, atol=1e-15)


def test_lr_decay_chain_is_replayed_exactly_and_settles():
    """A study with lr_decay: every stored policy equals the replay of its generation's members
    (audit_chain, which steps with the generation's index), ω still reaches the optimum, and its
    steps over the last 20 of 60 generations are shorter than with a constant lr."""
    def means(**options):
        sampler = ReinforceSampler(search_space=SPACE, init={"a": -1.5, "b": 1.5},
                                   population_size=8, learning_rate=0.05, learn_sigma=True,
                                   seed=3, **options)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(neg_sq_distance, n_trials=8 * 60)
        learned = sampler.policy(study)
        assert np.allclose([learned.params["a"], learned.params["b"]], CENTRE, atol=0.2), learned
        chain = chain_means(audit_chain(study, sampler, 8))
        assert len(chain) == 61
        return np.linalg.norm(np.diff(chain[-21:], axis=0), axis=1).mean()

    assert means(lr_decay=10.0) < 0.8 * means()


def test_min_sigma_is_the_floor_of_the_learned_sigma():
    """Near the optimum the learned σ shrinks: below 0.1 without a floor, and with min_sigma = 0.1
    every policy's σ stays ≥ 0.1 and ends on the floor."""
    def sigmas(**options):
        sampler = ReinforceSampler(search_space=SPACE, init=dict(zip(SPACE, CENTRE, strict=True)),
                                   population_size=8, learning_rate=0.05, learn_sigma=True, seed=3,
                                   **options)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(neg_sq_distance, n_trials=8 * 60)
        chain = audit_chain(study, sampler, 8)
        return np.exp(np.array([chain[g]["policy"]["log_sigma"] for g in sorted(chain)]))

    assert sigmas()[-1].max() < 0.1
    floored = sigmas(min_sigma=0.1)
    assert floored.min() >= 0.1 - 1e-12 and np.allclose(floored[-1], 0.1)


def test_entropy_bonus_adds_beta_to_the_log_sigma_gradient():
    """Entropy regularisation (J + β H, ∂H/∂log σ_i = 1): on a flat reward (all advantages zero)
    an SGD step leaves ω and moves every log σ_i by exactly lr·β; on any reward the step differs
    from the unregularised one by lr·β in log σ only."""
    policy = _Policy(np.array([0.4, 0.6]), np.log(np.array([0.1, 0.2])), 0.0, None)
    draws = np.array([[0.5, 0.5], [0.3, 0.7], [0.45, 0.62]])

    def step(rewards, beta):
        sampler = ReinforceSampler(search_space=SPACE, learning_rate=0.01, optimizer="sgd",
                                   learn_sigma=True, population_size=3, entropy_bonus=beta)
        return sampler._step(policy, draws, np.asarray(rewards, dtype=float), 3)

    flat = step([0.0, 0.0, 0.0], 0.5)  # the baseline b = 0: every advantage is 0
    assert np.array_equal(flat.mean, policy.mean)
    assert np.allclose(flat.log_sigma - policy.log_sigma, 0.01 * 0.5, rtol=0, atol=1e-15)
    rewards = [1.0, -1.0, 0.5]
    with_bonus, without = step(rewards, 0.3), step(rewards, 0.0)
    assert np.allclose(with_bonus.mean, without.mean, rtol=0, atol=0)
    assert np.allclose(with_bonus.log_sigma - without.log_sigma, 0.01 * 0.3, rtol=0, atol=1e-15)
    assert not np.allclose(without.log_sigma, policy.log_sigma)


# -- state in storage -----------------------------------------------------------------------
def test_n_jobs_threads_share_one_chain():
    sampler = ReinforceSampler(search_space=SPACE, population_size=4, seed=4)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(neg_sq_distance, n_trials=40, n_jobs=3)
    chain = audit_chain(study, sampler, 4)
    assert sorted(chain) == list(range(11))  # 10 finished generations: 10 updates
    assert sampler.policy(study).generation == 10
    # the threads waited for each other: every member was drawn from its generation's policy
    assert all(len(chain[g]["members"]) == 4 for g in range(10))


def test_fail_running_and_enqueued_trials_never_enter_an_update(tmp_path):
    """A crash leaves a RUNNING trial; a failed trial returns NaN; an enqueued trial's parameters
    are not the policy's draw. The crashing process never waits on its own RUNNING trial (it draws
    off-policy); a restarted process (a new sampler on the same storage) waits for it, fails it as
    stale after ``wait_timeout`` and goes on with the stored chain; none of them enters an update."""
    def storage():  # a new storage object per "process"
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log")))

    study = optuna.create_study(direction="maximize", storage=storage(), study_name="s",
                                sampler=ReinforceSampler(search_space=SPACE, population_size=4,
                                                         seed=5))
    study.optimize(neg_sq_distance, n_trials=5)
    crashed = study.ask()
    crashed.suggest_float("a", LOW, HIGH)  # draws from the policy, then the worker "dies"
    study.optimize(lambda t: neg_sq_distance(t) * float("nan"), n_trials=2)
    partial = {"a": 1.234}
    study.enqueue_trial(partial, skip_if_exists=False)
    study.optimize(neg_sq_distance, n_trials=1)
    before = ReinforceSampler(search_space=SPACE, seed=0).policy(study).generation

    assert before == 1  # generation 1 (trials 4-7) is unfinished while trial 5 runs
    assert study.trials[-1].system_attrs[_KEY]["drawn_from"] == 1  # off-policy, no wait

    restarted = ReinforceSampler(search_space=SPACE, population_size=4, seed=6, wait_timeout=1.0,
                                 poll_interval=0.05)
    study = optuna.load_study(study_name="s", storage=storage(), sampler=restarted)
    study.optimize(neg_sq_distance, n_trials=12)
    chain = audit_chain(study, restarted, 4)
    states = {t.number: t.state for t in study.trials}
    assert states[crashed.number] == TrialState.FAIL
    assert study.trials[crashed.number].user_attrs["fail_phase"] == "worker"  # failed as stale
    assert sum(s == TrialState.FAIL for s in states.values()) == 3
    enqueued = next(t for t in study.trials if t.params.get("a") == partial["a"])
    assert _KEY in enqueued.system_attrs  # "b" came from the policy, "a" did not
    assert chain[2]["from"] == (4,) and chain[3]["from"] == (9, 10, 11)
    used = {n for g in chain for n in chain[g]["from"]}
    excluded = {crashed.number, enqueued.number} | {
        n for n, s in states.items() if s == TrialState.FAIL}
    assert not used & excluded
    assert len(chain) - 1 > before


def test_a_member_waits_for_another_workers_trial_and_times_out_with_a_warning():
    """K = 2. Trial 1 runs in "another worker" (tagged with a live process, so never stale): trial 2
    (generation 1) waits until it finishes and then draws from the policy after update 0. Trial 3
    never finishes: trial 4 (generation 2) gives up after ``wait_timeout``, warns, and draws from
    generation 1's policy, which leaves it out of generation 2's update."""
    import threading

    from simsearch.workers import TAG_KEY, WorkerTag

    sampler = ReinforceSampler(search_space=SPACE, population_size=2, seed=11, wait_timeout=0.5,
                               poll_interval=0.02)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(neg_sq_distance, n_trials=1)

    def foreign() -> int:  # a trial made through the storage: not this sampler's own
        trial_id = study._storage.create_new_trial(study._study_id)
        study._storage.set_trial_system_attr(trial_id, TAG_KEY,
                                             {**WorkerTag.current().__dict__, "started": time.time()})
        return trial_id

    other = foreign()
    threading.Timer(0.3, study._storage.set_trial_state_values,
                    (other, TrialState.COMPLETE, [0.0])).start()
    study.optimize(neg_sq_distance, n_trials=1)
    record = study.trials[2].system_attrs[_KEY]  # drawn after update 0: it waited for trial 1
    assert (record["generation"], record["drawn_from"], record["from_trials"]) == (1, 1, [0])

    foreign()  # trial 3: never finishes
    with pytest.warns(UserWarning, match=r"trial 4 \(generation 2\) waited 0.5 s .* trials \[3\]"):
        study.optimize(neg_sq_distance, n_trials=1)
    record = study.trials[4].system_attrs[_KEY]
    assert (record["generation"], record["drawn_from"]) == (2, 1)
    assert study.trials[3].state == TrialState.RUNNING  # alive: not failed as stale


def test_seeded_runs_reproduce_and_unseeded_workers_differ():
    def run(seed):
        study = optuna.create_study(
            direction="maximize",
            sampler=ReinforceSampler(search_space=SPACE, population_size=4, seed=seed))
        study.optimize(neg_sq_distance, n_trials=20)
        return [tuple(t.params.values()) for t in study.trials]

    assert run(7) == run(7)
    assert run(7) != run(8)
    first, second = run(None), run(None)
    assert not set(first) & set(second)


def _journal_worker(path: str, restart_every: int | None = None) -> dict:
    """One worker process: join the shared study and run trials until generation 8 exists."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    sampler = ReinforceSampler(search_space=SPACE, population_size=4, learning_rate=0.1,
                               poll_interval=0.02, restart_every=restart_every)
    study = optuna.load_study(study_name="shared", storage=storage, sampler=sampler)
    rng, mine = np.random.default_rng(), []

    def objective(trial):
        mine.append(trial.number)
        time.sleep(rng.uniform(0.0, 0.03))
        return neg_sq_distance(trial)

    while (sampler.policy(study) is None) or sampler.policy(study).generation < 8:
        study.optimize(objective, n_trials=1)
    return {"trials": mine, "mean": sampler.policy(study).params}


@pytest.mark.parametrize("restart_every", [None, 3])
def test_three_processes_share_a_journal_file(tmp_path, restart_every):
    """3 processes, one JournalStorage file, 8 generations of K = 4: every generation updated
    exactly once, every process ends with the same ω, no trial lost; with restart_every = 3 the
    processes also agree on the restarts after generations 2 and 5 (unseeded workers: the restart
    point comes from storage, not from a worker's generator)."""
    path = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    with multiprocessing.get_context("fork").Pool(3) as pool:  # fork: no re-import per worker
        outputs = pool.starmap(_journal_worker, [(path, restart_every)] * 3, chunksize=1)
    study = optuna.load_study(study_name="shared", storage=storage)
    reader = ReinforceSampler(search_space=SPACE, population_size=4, learning_rate=0.1,
                              restart_every=restart_every)
    chain = audit_chain(study, reader, 4)
    assert sorted(chain) == list(range(9)), sorted(chain)
    assert all(len(chain[g]["members"]) == 4 for g in range(8))  # every member waited: on-policy
    assert outputs[0]["mean"] == outputs[1]["mean"] == outputs[2]["mean"]
    assert outputs[0]["mean"] == reader.policy(study).params
    ran = sorted(n for o in outputs for n in o["trials"])
    assert ran == [t.number for t in study.trials]  # every trial ran by exactly one process
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    draws = [tuple(t.system_attrs[_KEY]["draw"]) for t in study.trials]
    assert len(set(draws)) == len(draws)  # unseeded workers never propose the same point
    restarts = [chain[g]["policy"].get("restart", 0) for g in sorted(chain)]
    assert restarts == ([0] * 9 if restart_every is None else [0, 0, 0, 1, 1, 1, 2, 2, 2])


# -- restarts ----------------------------------------------------------------------------------
def _restart_study(seed=12, n_trials=4 * 7, **options):
    sampler = ReinforceSampler(search_space=SPACE, init={"a": -1.0, "b": 1.0}, population_size=4,
                               learn_sigma=True, learning_rate=0.1, restart_every=3, seed=seed,
                               **options)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(neg_sq_distance, n_trials=n_trials)
    return study, sampler


def test_a_restart_happens_exactly_after_every_g_generations():
    """K = 4, G = 3, 7 generations: generations 1–2 and 4–5 draw from stepped policies of restarts
    0 and 1; generations 3 and 6 from fresh ones — σ, baseline and Adam state the initial
    policy's, ω the uniform draw of the documented rule (numpy's default_rng seeded by the first
    16 bytes of the SHA-256 of [g, draws, rewards] of generation g = 2, 5), recomputed here from
    the trials; a seeded run repeats the chain."""
    study, sampler = _restart_study()
    chain = audit_chain(study, sampler, 4)
    assert sorted(chain) == list(range(8))
    initial = chain[0]["policy"]
    for g in range(8):
        policy = chain[g]["policy"]
        fresh = g in (3, 6)
        assert policy.get("restart", 0) == (g // 3), g
        assert (policy["baseline"] is None) == (g in (0, 3, 6)), g
        assert (policy["log_sigma"] == initial["log_sigma"]) == (g in (0, 3, 6)), g
        assert (policy["adam"]["t"] == 0) == (g in (0, 3, 6)), g
        if fresh:
            members = range((g - 1) * 4, g * 4)
            payload = [g - 1, [study.trials[n].system_attrs[_KEY]["draw"] for n in members],
                       [study.trials[n].value for n in members]]
            digest = hashlib.sha256(json.dumps(payload).encode()).digest()
            expected = np.random.default_rng(int.from_bytes(digest[:16], "big")).uniform(size=2)
            assert np.array_equal(policy["mean"], expected), (g, policy["mean"], expected)
            assert policy["adam"]["m"] == [0.0] * 4 and policy["adam"]["v"] == [0.0] * 4
            assert not np.allclose(policy["mean"], chain[g - 1]["policy"]["mean"], atol=1e-3)
    again, _ = _restart_study()
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    snapshot = sampler.policy(study)
    assert (snapshot.generation, snapshot.restart) == (7, 2)
    init, init_sampler = _restart_study(restart_mean="init")
    init_chain = audit_chain(init, init_sampler, 4)
    assert init_chain[3]["policy"]["mean"] == init_chain[6]["policy"]["mean"] == initial["mean"]
    assert init_chain[3]["policy_id"] != init_chain[0]["policy_id"]  # the restart index differs


def test_workers_agree_on_a_restart_they_compute_separately(tmp_path):
    """Worker A (seed 1) finishes generation 2, the last before the restart, and draws nothing
    more: the restarted policy is stored nowhere. Worker B (another seed, its own storage object)
    and A each compute it from storage and agree; B's next draw stores it, and A reads the same.
    A sampler with another restart_every is refused on this chain."""
    def storage():
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log")))

    def worker(seed):
        sampler = ReinforceSampler(search_space=SPACE, population_size=4, learn_sigma=True,
                                   learning_rate=0.1, restart_every=3, seed=seed)
        return optuna.load_study(study_name="s", storage=storage(), sampler=sampler), sampler

    optuna.create_study(study_name="s", storage=storage(), direction="maximize")
    study_a, a = worker(1)
    study_a.optimize(neg_sq_distance, n_trials=12)
    study_b, b = worker(2)
    assert not any(r.get("drawn_from") == 3 for r in
                   (t.system_attrs[_KEY] for t in study_b.trials))
    pa, pb = a.policy(study_a), b.policy(study_b)
    assert (pa.generation, pa.restart, pb.restart) == (3, 1, 1)
    assert pa.params == pb.params and pa.baseline is None and np.array_equal(pa.sigma, pb.sigma)
    study_b.optimize(neg_sq_distance, n_trials=1)
    record = study_b.trials[12].system_attrs[_KEY]
    assert record["drawn_from"] == 3 and record["restart_every"] == 3
    assert _Policy.from_json(record["policy"]).mean.tolist() == [
        (pa.params[n] - LOW) / (HIGH - LOW) for n in SPACE]
    assert a.policy(optuna.load_study(study_name="s", storage=storage())).params == pa.params
    other = ReinforceSampler(search_space=SPACE, population_size=4, restart_every=4)
    with pytest.raises(ValueError, match=r"restart_every = 3 \(stored in its trials\); this "
                                         r"sampler has restart_every = 4"):
        other.policy(study_b)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_policy_picks_the_restart_with_the_highest_recent_reward(direction):
    """1-D toy, R = −(x − 0.3)² (its negative minimised), σ = 1e-3 and a tiny SGD step, so each
    restart's trials sit at its ω: best_policy must return the ω a restart ended with whose last
    2 generations have the highest mean reward, computed here from the trial values; on this
    seed that is neither the first nor the last restart, and the final policy differs."""
    k, g_len, restarts = 4, 3, 6
    space = {"x": FloatDistribution(0.0, 1.0)}
    sign = 1.0 if direction == "maximize" else -1.0
    sampler = ReinforceSampler(search_space=space, sigma=1e-3, optimizer="sgd", learning_rate=1e-6,
                               population_size=k, restart_every=g_len, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(lambda t: -sign * (t.suggest_float("x", 0.0, 1.0) - 0.3) ** 2,
                   n_trials=k * g_len * restarts)
    trials = study.trials
    recent = {r: [t for t in trials if r * g_len + 1 <= t.number // k < (r + 1) * g_len]
              for r in range(restarts)}
    scores = {r: np.mean([sign * t.value for t in ts]) for r, ts in recent.items()}
    expected = max(scores, key=scores.get)
    assert expected not in (0, restarts - 1)  # the toy means something on this seed
    best = sampler.best_policy(study, last_generations=2)
    assert best.restart == expected and best.generation == (expected + 1) * g_len
    assert best.score == pytest.approx(scores[expected], rel=1e-12)
    assert best.params["x"] == pytest.approx(np.mean([t.params["x"] for t in recent[expected]]),
                                             abs=5e-3)
    assert abs(best.params["x"] - 0.3) < min(abs(np.mean([t.params["x"] for t in ts]) - 0.3)
                                              for r, ts in recent.items() if r != expected)
    assert sampler.policy(study).restart == restarts and sampler.policy(study).params != best.params
    with pytest.raises(ValueError, match=r"last_generations must be an int >= 1, got 0"):
        sampler.best_policy(study, last_generations=0)


def test_best_policy_without_restarts_is_the_newest_policy():
    sampler = ReinforceSampler(search_space=SPACE, init={"a": -1.0, "b": 1.0}, population_size=4,
                               seed=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    assert sampler.best_policy(study) is None
    study.optimize(neg_sq_distance, n_trials=4 * 5)
    best, newest = sampler.best_policy(study, last_generations=2), sampler.policy(study)
    assert (best.generation, best.params, best.restart) == (newest.generation, newest.params, 0)
    assert best.score == pytest.approx(np.mean([t.value for t in study.trials[12:]]), rel=1e-12)


def _interleaved_study(seed: int = 4) -> tuple[optuna.Study, ReinforceSampler]:
    """K = 4, G = 3, 60 trials asked three at a time and told in reverse order, every 7th failed:
    proposals that find the newest trial unfinished, off-policy draws and restarts."""
    sampler = ReinforceSampler(search_space=SPACE, population_size=4, learn_sigma=True,
                               learning_rate=0.1, normalize_advantage=True, restart_every=3,
                               seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(20):
        asked = [study.ask() for _ in range(3)]
        values = [neg_sq_distance(t) for t in asked]
        for trial, value in reversed(list(zip(asked, values, strict=True))):
            if trial.number % 7 == 6:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
    return study, sampler


def test_the_prefix_cache_changes_no_proposal(monkeypatch):
    """The cache of finished leading trials (``_Prefix``) is a pure speed-up: a run with it and a
    run that reads every trial per proposal (the cache's view emptied) store the same draws,
    policies and parameters on every trial and report the same policy and best_policy; the
    cached run did read its trials from the cache."""
    cached, cached_sampler = _interleaved_study()
    (prefix,) = cached_sampler._prefixes.values()
    # the last proposal (trial 59, asked after trials 57 and 58) saw trials 0–56 finished
    assert len(prefix.trials) == 57 and len(prefix.stored) >= 14
    monkeypatch.setattr(reinforce._Prefix, "extend", lambda self, trials, space: reinforce._EMPTY)
    plain, plain_sampler = _interleaved_study()
    assert [t.params for t in cached.trials] == [t.params for t in plain.trials]
    assert [t.system_attrs for t in cached.trials] == [t.system_attrs for t in plain.trials]
    assert [t.state for t in cached.trials] == [t.state for t in plain.trials]
    def fields(snapshot):
        return (snapshot.generation, snapshot.params, snapshot.sigma.tolist(), snapshot.baseline,
                snapshot.restart, snapshot.score)

    assert fields(cached_sampler.policy(cached)) == fields(plain_sampler.policy(plain))
    for last in (1, 2):
        assert fields(cached_sampler.best_policy(cached, last)) == fields(
            plain_sampler.best_policy(plain, last))
    assert sum(t.system_attrs[_KEY]["drawn_from"] < t.number // 4 for t in cached.trials) > 0


# -- search spaces, fallback, initialisation, validation ---------------------------------------
def test_int_and_categorical_fall_back_with_one_warning():
    sampler = ReinforceSampler(population_size=2, seed=9)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", -1.0, 1.0)
        n = trial.suggest_int("n", 0, 3)
        c = trial.suggest_categorical("c", ["u", "v"])
        return x**2 + n + (c == "v")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=12)
    fallback = [w for w in caught if "ReinforceSampler models float" in str(w.message)]
    assert len(fallback) == 1 and "'n'" in str(fallback[0].message)
    later = study.trials[1:]
    assert all(set(t.system_attrs[_KEY]) >= {"draw"} for t in later)
    space = {"x": FloatDistribution(-1.0, 1.0)}
    for t in later:  # x comes from the policy's draw, n and c from the independent sampler
        assert t.params["x"] == pytest.approx(-1.0 + 2.0 * min(max(t.system_attrs[_KEY]["draw"][0], 0), 1))
    assert sampler.infer_relative_search_space(study, study.trials[-1]) == space
    assert _KEY not in study.trials[0].system_attrs  # nothing completed yet: independent


def test_a_changed_search_space_starts_a_new_chain():
    sampler = ReinforceSampler(population_size=2, seed=10)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) + t.suggest_float("y", 0.0, 1.0),
                   n_trials=6)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=6)
    records = [t.system_attrs[_KEY] for t in study.trials if _KEY in t.system_attrs]
    spaces = list(dict.fromkeys(r["space"] for r in records))
    assert len(spaces) == 2
    second = [r for r in records if r["space"] == spaces[1]]
    # trial 6 is in generation 3 (K = 2); the new chain's generations 0-2 hold no member of its
    # space, so it starts from the initial policy (the centre)
    assert second[0]["generation"] == 3 and second[0]["from_trials"] == []
    assert second[0]["policy"]["mean"] == [0.5] and len(second[0]["draw"]) == 1


def test_initial_mean_from_simulator_centre_or_given_point():
    from simsearch.problems import get

    simulator = get("gmm2d").simulator
    space = simulator.space
    default = ReinforceSampler.for_simulator(simulator, seed=0)
    centre = ReinforceSampler.for_simulator(simulator, init="centre", seed=0)
    bad = {"means": simulator.init_psi()["means"] * 0 + 4.0, "log_std": simulator.init_psi()["log_std"]}
    adversarial = ReinforceSampler.for_simulator(simulator, init=bad, seed=0)
    low, high = space.bounds()
    for sampler, psi in ((default, simulator.init_psi()), (adversarial, bad)):
        study = optuna.create_study(sampler=sampler, direction="maximize")
        study.optimize(lambda t: float(space.to_flat(simulator.suggest(t)).sum()), n_trials=1)
        learned = space.to_flat(space.from_params(sampler.policy(study).params))
        assert np.allclose(learned, space.to_flat(psi), atol=1e-6)
    study = optuna.create_study(sampler=centre)
    study.optimize(lambda t: float(space.to_flat(simulator.suggest(t)).sum()), n_trials=1)
    learned = space.to_flat(space.from_params(centre.policy(study).params))
    assert np.allclose(learned, (low + high) / 2, atol=1e-6)


def test_a_float32_psi_at_the_bounds_is_a_valid_start():
    """A learned ψ at the bounds, round-tripped through float32 tensors (``from_params``), lies
    just outside them; as an ``init`` it is taken as the bound (it was refused before)."""
    from simsearch.problems import get

    simulator = get("gmm2d").simulator
    space = simulator.space
    low, high = space.bounds()
    corner = space.from_flat(np.where(np.arange(len(low)) % 2 == 0, low, high))
    assert (space.to_flat(corner) < low).any() or (space.to_flat(corner) > high).any()  # rounding
    sampler = ReinforceSampler.for_simulator(simulator, init=corner, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: float(space.to_flat(simulator.suggest(t)).sum()), n_trials=1)
    start = space.to_flat(space.from_params(sampler.policy(study).params))
    assert np.allclose(start, np.where(np.arange(len(low)) % 2 == 0, low, high), atol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"population_size": 0}, "population_size"),
        ({"sigma": 0.0}, "sigma"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"sigma_units": "pixels"}, "sigma_units must be one of"),
        ({"sigma": 2.0}, "sigma must be"),
        ({"population_size": 1, "normalize_advantage": True}, "normalize_advantage needs"),
        ({"lr_decay": 0.0}, r"lr_decay \(τ, generations\) must be > 0 or None, got 0.0"),
        ({"entropy_bonus": -0.1, "learn_sigma": True},
         r"entropy_bonus \(β\) must be a finite number >= 0, got -0.1"),
        ({"entropy_bonus": float("nan"), "learn_sigma": True}, r"entropy_bonus \(β\).*got nan"),
        ({"entropy_bonus": 0.2}, r"entropy_bonus = 0.2 acts on the learned σ only"),
        ({"entropy_bonus": "0.1", "learn_sigma": True}, r"entropy_bonus \(β\).*got '0.1'"),
        ({"min_sigma": 0.0}, r"min_sigma \(unit-box units\) must lie in \[0.001, 1.0\], got 0.0"),
        ({"min_sigma": 0.3}, r"lie in \[min_sigma, 1\] = \[0.3, 1\]; got 0.22"),
        ({"search_space": SPACE, "sigma": 0.2, "sigma_units": "param", "min_sigma": 0.1},
         r"outside \[0.1, 1\] \(min_sigma, 1\)"),
        ({"search_space": SPACE, "sigma": 10.0, "sigma_units": "param"}, "outside"),
        ({"search_space": SPACE, "init": {"a": 3.0}}, r"init\['a'\].*got 3.0"),
        ({"search_space": {"n": optuna.distributions.IntDistribution(0, 3)}},
         r"search_space\['n'\]"),
        ({"restart_every": 0}, r"restart_every \(G, generations per restart\) must be an int "
                               r">= 1 or None, got 0"),
        ({"restart_every": True}, r"restart_every .*got True"),
        ({"restart_every": 2.5}, r"restart_every .*got 2.5"),
        ({"restart_mean": "gaussian"}, r"restart_mean must be one of \('uniform', 'init'\), "
                                       r"got 'gaussian'"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        ReinforceSampler(**options)


def test_multi_objective_is_refused():
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=ReinforceSampler(search_space=SPACE))
    with pytest.raises(ValueError, match="multi-objective"):
        study.optimize(lambda t: (neg_sq_distance(t), 0.0), n_trials=1)


def test_policy_round_trips_through_json():
    policy = _Policy(np.array([0.1, 0.2]), np.array([-1.0, -2.0]), 0.5,
                     (np.array([1e-3, 2.0, 3.0, 4.0]), np.ones(4), 3))
    data = json.loads(json.dumps(policy.to_json()))
    again = _Policy.from_json(data)
    assert again.to_json() == policy.to_json()


def test_registered_for_the_cli():
    from simsearch.sampler_registry import make_sampler

    assert isinstance(make_sampler("reinforce", seed=0), ReinforceSampler)


def test_objective_fine_tunes_an_accumulated_companion_model():
    """LTS Fig. 5a: the from-scratch model's reward drives the policy, an accumulated model
    fine-tuned on every trial's data is only observed (user attr ``accumulated_val_reward``)."""
    import torch

    from lightning_modules import AccumulatedMainTaskModule
    from simsearch import SimulatorObjective
    from simsearch.problems import get

    problem = get("gmm2d")
    torch.manual_seed(0)
    companion = AccumulatedMainTaskModule.from_module(problem.make_model())
    before = [p.detach().clone() for p in companion.parameters()]
    objective = SimulatorObjective(problem.simulator, problem.make_model, problem.val,
                                   n_samples=50, epochs=1, companion=companion)
    study = optuna.create_study(direction="maximize",
                                sampler=ReinforceSampler.for_simulator(problem.simulator, seed=0))
    study.optimize(objective, n_trials=2)
    rewards = [t.user_attrs["accumulated_val_reward"] for t in study.trials]
    assert companion.trials_seen == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    assert rewards[-1] == pytest.approx(companion.evaluate(*problem.val))
    assert any(not torch.equal(a, b) for a, b in zip(before, companion.parameters(), strict=True))
    with pytest.raises(TypeError, match="companion must be an AccumulatedMainTaskModule"):
        SimulatorObjective(problem.simulator, problem.make_model, problem.val,
                           companion=problem.make_model())
