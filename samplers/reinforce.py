"""Learning to Simulate's policy gradient (LTS §2.2–2.3, Eq. 2–4, Algorithm 1) as an Optuna sampler.

A Gaussian policy π_ω = N(ω, diag σ²) proposes the simulator parameters ψ. Trials are grouped in
*generations* of K; once K trials of generation g are complete, the policy takes one gradient step
on J(ω) = E_{ψ~π_ω}[R] (Eq. 2) with the REINFORCE estimate (Eq. 3–4)

    ∇_ω J ≈ (1/K) Σ_k ∇_ω log π_ω(ψ_k) Â_k,    Â_k = R(ψ_k) − b,

where b is an exponential moving average of earlier generations' rewards (the first generation uses
its own mean reward), and R is the trial's value (its negative for a ``minimize`` study). Eq. 4 in
the paper is a sum over k; the mean used here only rescales the learning rate. With
``normalize_advantage`` the K advantages are standardised within their generation,
Â_k ← (Â_k − mean Â) / std Â (all zero if the K rewards are equal): the generation's mean replaces
b, and every generation's step has the same scale whatever the reward's units, so one generation
with an outlying reward cannot dominate Adam's second-moment estimate for the generations after it.

**Step size and σ floor.** Eq. 4 is a stochastic-gradient step; with a constant step size and
scale-free steps (Adam, or standardised advantages) a converged policy keeps moving by steps of
about the same size, driven by noise. ``lr_decay`` = τ decays the step size of generation g's
update as lr_g = lr / √(1 + g/τ) (the usual O(1/√g) stochastic-gradient schedule: Σ lr_g = ∞, so
the policy can still travel any distance), the same for both optimisers and a function of g
alone, so the update stays deterministic given its members. With
``learn_sigma`` the learned σ can collapse onto the first local optimum it finds; ``min_sigma``
(unit-box units) is the floor it is clipped to (default 1e-3). ``entropy_bonus`` = β ascends
J(ω, σ) + β H(π_ω) instead, H = Σ_i log σ_i + (d/2) log 2πe the policy's entropy (entropy
regularisation, Williams & Peng 1991, "Function optimization using connectionist reinforcement
learning algorithms", Connection Science 3(3)): ∂H/∂log σ_i = 1, so β is added to every
coordinate's log σ gradient and σ grows where the reward does not discriminate between draws, in
the advantages' units (standardised advantages: a fraction of one standard deviation per draw).

**Coordinates and σ's units.** The policy lives in Optuna's unit-box coordinates: every
parameter's interval ``[low, high]`` maps linearly onto ``[0, 1]`` (log-scaled parameters in log
space), u = (ψ − low) / (high − low). ``sigma`` is given in one of two units (``sigma_units``):

* ``"unit"`` (default): σ in unit-box units, the same for every coordinate; the default σ = √0.05
  ≈ 0.224 is then 22 % of each parameter's range — e.g. 2.24 for a mean bounded by [-5, 5];
* ``"param"``: σ in each parameter's *own* units (its log for a log-scaled one), as LTS §2.3 states
  its σ² = 0.05 ("set the variance to 0.05 in all cases", ψ being the simulator's unconstrained
  parameters); coordinate i then has the unit-box σ_i = σ / (high_i − low_i) — e.g. 0.022 for a
  mean in [-5, 5], 0.037 for a logit in [-3, 3], 0.25 for a probability in [0.05, 0.95].

*Measured (BENCHMARKS.md, issue 4)*: on ``gmm2d`` σ in ``"param"`` units (σ = √0.05, fixed or
learned) ends at worse local optima than σ = 0.1 in unit-box units, learned (SVM test accuracy
0.68–0.69 against 0.84 over seeds 10–13); standardised advantages end at 0.85 there (seeds 0–2:
0.90 against 0.79), neither reaching 0.95 on every seed;
on ``traffic-count`` from the adversarial start, where nearly every draw of σ = √0.05 (unit-box)
trains a constant counter (reward sd within a generation often < 0.01), neither standardised
advantages alone (flat for 42 generations) nor the plain rule (flat for 60) leave the plateau;
σ = 0.5 (unit-box) learned, with standardised advantages, does (σ = 0.5 without them was not run),
while from a random start the plain rule at σ = √0.05 climbs further in 200 generations than it;
σ = 0.35 learned with standardised advantages reaches 90 % of the way to ψ_real's reward from both
starts (generations 107 and 195 of 200, one seed).
No setting was best on every problem, so the defaults are unchanged: σ = √0.05 (LTS's value) in
unit-box units, fixed, and Eq. 4's advantages R − b. On ``gmm2d`` at 8000 trials (seeds 10–13,
standardised advantages) ``min_sigma = 0.05`` and ``lr_decay = 100`` both kept the seeds that found
the good ψ there (final ω 0.888 and 0.878 against 0.841 without), neither left a 5-of-6-blob optimum;
both stay off by default (measured on gmm2d only). ``entropy_bonus`` (same benchmark, with the
floor) ended below the floor alone: β = 0.03 / 0.1 gave 0.854 / 0.866 against 0.888, and
β = 0.3 drove σ to its bound 1 (ω's accuracy 0.49–0.52); it stays off (β = 0) by default.
``learning_rate = 0.01`` with ``min_sigma = 0.07`` had the best selection mean (0.919) but measured
0.782 ± 0.148 on seeds 0–2, below ``min_sigma = 0.05`` alone (0.904).

**Restarts** (``restart_every`` = G, off by default). A Gaussian policy's gradient step is local:
on ``gmm2d`` about half of the runs settle by 2000–4000 trials in a local optimum that only a
coordinated move of several components would leave (BENCHMARKS.md, issue 4). As in restart
evolution strategies (Auger & Hansen 2005, "A restart CMA evolution strategy with increasing
population size", IEEE CEC 2005: IPOP-CMA-ES restarts from a new point when a run stagnates), the
policy restarts after every G-th generation: after the update of generation g = rG − 1 the
generation rG draws from restart r's fresh policy — σ, the baseline and Adam's moments as
initially, the step-size decay (``lr_decay``) counted from the restart, and ω either drawn
uniformly in the unit box (``restart_mean="uniform"``, as IPOP-CMA-ES draws its initial point
uniformly in the search region) or the initial ω again (``"init"``: the same start, new draws).
The population is not enlarged (IPOP's other half): K fixes which trials form a generation. The
restart is a function of the storage alone — the uniform draw is seeded by a SHA-256 digest of g
and the draws and rewards of generation g's usable members — so every worker computes the same
one, and seeded runs repeat it; the restart period is a fixed count, not a stagnation test, for
the same reason. The chain records G in its trials and refuses a sampler with another G.
:meth:`ReinforceSampler.best_policy` recommends, over the restarts, the ω a restart ended with
whose last generations had the highest mean reward (the objective's value: validation reward,
never test); :meth:`ReinforceSampler.policy` stays the newest policy, the current restart's.
*Measured* (BENCHMARKS.md, issue 4, gmm2d, standardised advantages, floor 0.05, G = 500,
``"init"``): 3 restarts of 8000 trials, R chosen on seeds 10–13 (0.911 against 0.880 for 2),
gave 0.954 ± 0.010 on seeds 0–2 (0.9615 / 0.9575 / 0.942), and a second 4000-trial study from
the recommended ω (``for_simulator(init=ψ)``, σ from 0.05 learned, lr decay τ = 50) raised it to
0.963 ± 0.010 (0.952 / 0.9675 / 0.970); restarts stay off by default.

**Bounds.** A draw x ~ π_ω may leave the box. The trial evaluates the clipped point clip(x, 0, 1),
and the update uses log π_ω at the *unclipped* draw x, which is stored on the trial. This is the
exact score-function gradient of E_{x~π_ω}[R(clip(x))], so clipping does not bias the estimate
(the objective is R composed with the projection, which is flat outside the box). After each step ω
is projected back onto the box, so the learned ψ is always a valid point.

**Generations and state in storage.** Generation g is a fixed set of trials: the K trials numbered
gK, …, gK + K − 1 (trial numbers are assigned atomically by the storage, so every process agrees on
the rule without coordination; a chain records K in its trials and refuses a sampler with another K).
Each trial the policy proposes carries one system attribute, ``reinforce:state``: the search-space
fingerprint, K, its generation g, the generation of the policy it was drawn from, that policy's id
and its draw x. A process that computes a policy no trial has stored yet also stores it (ω, log σ,
baseline, optimiser state) with the trial numbers its update used. Any process rebuilds every policy
from storage alone (as Optuna's ``CmaEsSampler`` does), so processes, ``n_jobs > 1`` and restarts
share one chain:

* **the update of generation g** uses its members that are COMPLETE, were drawn from the policy of
  g, and whose parameters are exactly their draw. FAIL and PRUNED members (a simulator exception, a
  NaN loss, a worker's surplus trial, a member failed as stale after its worker died) and enqueued or
  fixed ones count as finished but do not enter it: the gradient is the mean over the K' ≤ K usable
  members, and with K' = 0 the policy is carried over unchanged. A failed trial has no reward, so it
  is left out rather than scored;
* **waiting.** A member of generation g ≥ 1 is drawn from the policy after update g − 1, which needs
  every member of generation g − 1 finished. While one is RUNNING in another process (or not yet
  sampled), ``sample_relative`` waits, polling the storage every ``poll_interval`` seconds. While it
  waits it fails stale trials by :func:`simsearch.workers.fail_stale_trials` with ``wait_timeout`` as
  the grace period (a member whose worker was killed: its process is gone on this host, it sent no
  heartbeat for that long from another host, or Optuna's heartbeat on RDB storages), so one crash
  cannot hang the study; the waiting trial carries its process's worker tag
  (:func:`simsearch.workers.tag_trial`), so others' stale checks see it alive. It never waits on a
  trial that the same thread started with this sampler (it may be an abandoned ``ask``), so a single
  process optimising sequentially never waits, while ``n_jobs`` threads wait for each other. If the
  generation is still unfinished after ``wait_timeout`` seconds, or a blocking member is its own,
  the trial is drawn from the newest policy it can compute, with a warning when it timed out; such
  an off-policy member stays out of its generation's update;
* **exactly one update per generation**: the update is a deterministic float64 function of the
  previous policy and its finished members, so every process that computes it gets the same policy
  and the same id; the lowest-numbered stored copy is canonical, and every process reads the same
  final ω (:meth:`ReinforceSampler.policy`).

Reading the chain does not cost O(trials) per proposal: a finished trial never changes, so a
sampler keeps what it read from the study's leading finished trials (a per-study cache) and reads
only the trials after them; the proposals are the same as without it (tested).

Integer, categorical, conditional and dynamic parameters are not modelled: they are sampled by the
``independent_sampler`` (default ``RandomSampler``) with one warning. ``sample_relative`` still
accepts any space handed to it directly (Optuna's transform maps ints to a continuous interval and
categoricals to one-hot coordinates). Multi-objective studies are refused.

>>> import optuna
>>> sampler = ReinforceSampler(
...     search_space={"x": optuna.distributions.FloatDistribution(-2.0, 2.0)},
...     init={"x": -1.5}, population_size=4, learning_rate=0.05, seed=0)
>>> study = optuna.create_study(sampler=sampler, direction="maximize")
>>> study.optimize(lambda t: -(t.suggest_float("x", -2.0, 2.0) - 1.0) ** 2, n_trials=80)
>>> snapshot = sampler.policy(study)
>>> snapshot.generation, snapshot.params["x"] > 0  # moved from -1.5 toward the optimum at 1
(20, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna._transform import _SearchSpaceTransform
from optuna.distributions import BaseDistribution, FloatDistribution, distribution_to_json
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["PolicySnapshot", "ReinforceSampler"]

_logger = logging.getLogger(__name__)
_KEY = "reinforce:state"
_SIGMA_RANGE = (1e-3, 1.0)  # the range of min_sigma and of the unit-box σ (learned σ: [min_sigma, 1])
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8
_OPTIMIZERS = ("adam", "sgd")
_SIGMA_UNITS = ("unit", "param")
_RESTART_MEANS = ("uniform", "init")


@dataclass(frozen=True)
class PolicySnapshot:
    """The policy a study has reached: its generation, mean ω as parameter values, σ (unit-box
    units, one per encoded coordinate), the reward baseline b (None before the first update), the
    restart it belongs to and, from :meth:`ReinforceSampler.best_policy`, its ranking score."""

    generation: int
    params: dict[str, Any]
    sigma: np.ndarray
    baseline: float | None
    restart: int = 0  # the restart the policy belongs to (0: the first run)
    score: float | None = None  # best_policy only: the mean reward ranking the restarts


@dataclass(frozen=True)
class _Policy:
    mean: np.ndarray
    log_sigma: np.ndarray
    baseline: float | None
    moments: tuple[np.ndarray, np.ndarray, int] | None  # Adam's (m, v, t); None for SGD
    restart: int = 0  # r: the policy descends from the r-th restart (0: the initial policy)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mean": self.mean.tolist(),
            "log_sigma": self.log_sigma.tolist(),
            "baseline": self.baseline,
        }
        if self.moments is not None:
            m, v, t = self.moments
            out["adam"] = {"m": m.tolist(), "v": v.tolist(), "t": t}
        if self.restart:
            out["restart"] = self.restart  # left out for r = 0: chains without restarts unchanged
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Policy:
        adam = data.get("adam")
        moments = None if adam is None else (
            np.asarray(adam["m"], dtype=np.float64), np.asarray(adam["v"], dtype=np.float64),
            int(adam["t"]))
        return cls(np.asarray(data["mean"], dtype=np.float64),
                   np.asarray(data["log_sigma"], dtype=np.float64), data["baseline"], moments,
                   int(data.get("restart", 0)))


def _policy_id(policy_json: Mapping[str, Any]) -> str:
    """A short content hash identifying a stored policy."""
    return hashlib.sha1(json.dumps(policy_json, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(search_space: Mapping[str, BaseDistribution]) -> str:
    spec = [[name, distribution_to_json(d)] for name, d in search_space.items()]
    return hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:12]


class ReinforceSampler(optuna.samplers.BaseSampler):
    """REINFORCE with a Gaussian policy over the float parameters (LTS Algorithm 1).

    The learned ψ is the policy mean: ``sampler.policy(study).params``.

    Args:
        population_size: K, trials per policy iteration (generation), ≥ 1.
        sigma: the policy's initial standard deviation (default √0.05, LTS §2.3), in
            ``sigma_units``.
        sigma_units: ``"unit"`` (unit-box units, the same σ for every coordinate) or ``"param"``
            (each parameter's own units, σ_i = σ / (high_i − low_i) in the unit box; see the
            module's note). Either way the unit-box σ_i must lie in [min_sigma, 1].
        learn_sigma: also learn log σ per coordinate (unit-box σ kept in [min_sigma, 1]); the
            paper fixes σ.
        learning_rate: step size of the optimiser on ω (and log σ).
        optimizer: ``"adam"`` or ``"sgd"`` (gradient *ascent* on J).
        baseline_decay: β of the moving-average baseline b ← β b + (1 − β) mean(R), in [0, 1).
        lr_decay: τ > 0 (generations): generation g's update uses the step size
            lr / √(1 + g/τ). ``None``: constant.
        min_sigma: the floor of the learned unit-box σ, in [1e-3, 1] and at most the initial
            unit-box σ.
        entropy_bonus: β ≥ 0, the weight of the policy's entropy added to J (see the module's
            note); needs ``learn_sigma``. 0: none (Eq. 4 as in the paper).
        normalize_advantage: standardise the advantages within each generation (see the
            module's note); needs K ≥ 2.
        restart_every: G ≥ 1 (generations): restart the policy after every G generations (see
            the module's note on restarts). ``None``: never (the paper's Algorithm 1).
        restart_mean: where a restart puts ω: ``"uniform"`` (drawn uniformly in the unit box,
            as restart evolution strategies draw their initial point) or ``"init"`` (the
            initial ω again, with fresh draws).
        init: starting ω as parameter values (e.g. the simulator's init, or a deliberately bad
            "adversarial" point, LTS Fig. 4b / 5b); parameters it omits start at the centre of
            their bounds. ``None``: the centre of the bounds.
        search_space: the float distributions the policy models, used from the first trial on
            (e.g. ``simulator.search_space()``). ``None``: the float parameters common to every
            completed trial (so the first trial is sampled independently).
        independent_sampler: samples what the policy does not model (default ``RandomSampler``).
        seed: seeds the policy's draws and the default independent sampler.
        wait_timeout: the longest a trial waits for the previous generation to finish (seconds),
            and the grace period of the stale check it runs meanwhile (see the module's rule):
            longer than the slowest trial of a worker without heartbeat.
        poll_interval: seconds between looks at the storage while waiting.
    """

    def __init__(
        self,
        *,
        population_size: int = 8,
        sigma: float = math.sqrt(0.05),
        sigma_units: str = "unit",
        learn_sigma: bool = False,
        learning_rate: float = 0.05,
        optimizer: str = "adam",
        baseline_decay: float = 0.9,
        normalize_advantage: bool = False,
        lr_decay: float | None = None,
        min_sigma: float = _SIGMA_RANGE[0],
        entropy_bonus: float = 0.0,
        restart_every: int | None = None,
        restart_mean: str = "uniform",
        init: Mapping[str, Any] | None = None,
        search_space: Mapping[str, BaseDistribution] | None = None,
        independent_sampler: optuna.samplers.BaseSampler | None = None,
        seed: int | None = None,
        wait_timeout: float = 600.0,
        poll_interval: float = 1.0,
    ) -> None:
        if isinstance(population_size, bool) or not isinstance(population_size, int) or (
                population_size < 1):
            raise ValueError(f"population_size (K) must be an int >= 1, got {population_size!r}")
        if sigma_units not in _SIGMA_UNITS:
            raise ValueError(f"sigma_units must be one of {_SIGMA_UNITS}, got {sigma_units!r}")
        if not _SIGMA_RANGE[0] <= min_sigma <= _SIGMA_RANGE[1]:
            raise ValueError(f"min_sigma (unit-box units) must lie in {list(_SIGMA_RANGE)}, "
                             f"got {min_sigma!r}")
        if not sigma > 0 or (sigma_units == "unit" and not min_sigma <= sigma <= _SIGMA_RANGE[1]):
            raise ValueError(f"sigma must be > 0 and, in unit-box units, lie in "
                             f"[min_sigma, 1] = [{min_sigma:g}, 1]; got {sigma!r} ({sigma_units})")
        if normalize_advantage and population_size < 2:
            raise ValueError(f"normalize_advantage needs population_size (K) >= 2, got {population_size}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {baseline_decay!r}")
        if lr_decay is not None and not lr_decay > 0:
            raise ValueError(f"lr_decay (τ, generations) must be > 0 or None, got {lr_decay!r}")
        if not (isinstance(entropy_bonus, int | float) and 0 <= entropy_bonus < math.inf):
            raise ValueError(f"entropy_bonus (β) must be a finite number >= 0, got {entropy_bonus!r}")
        if entropy_bonus > 0 and not learn_sigma:
            raise ValueError(f"entropy_bonus = {entropy_bonus!r} acts on the learned σ only; it "
                             f"needs learn_sigma=True")
        if restart_every is not None and (isinstance(restart_every, bool) or not isinstance(
                restart_every, int) or restart_every < 1):
            raise ValueError(f"restart_every (G, generations per restart) must be an int >= 1 or "
                             f"None, got {restart_every!r}")
        if restart_mean not in _RESTART_MEANS:
            raise ValueError(f"restart_mean must be one of {_RESTART_MEANS}, got {restart_mean!r}")
        if not wait_timeout > 0 or not poll_interval > 0:
            raise ValueError(f"wait_timeout and poll_interval must be > 0 seconds, got "
                             f"{wait_timeout!r} and {poll_interval!r}")
        self._wait_timeout, self._poll = float(wait_timeout), float(poll_interval)
        self._mine: dict[tuple[int, int, int], int] = {}  # (storage, study, number) -> thread
        self._prefixes: dict[tuple[int, int, str], _Prefix] = {}  # (storage, study, space)
        self._prefixes_lock = threading.Lock()
        self._k, self._sigma, self._learn_sigma = population_size, float(sigma), learn_sigma
        self._sigma_units, self._normalize = sigma_units, normalize_advantage
        self._lr, self._optimizer, self._decay = float(learning_rate), optimizer, baseline_decay
        self._lr_decay, self._min_sigma = lr_decay, float(min_sigma)
        self._entropy = float(entropy_bonus)
        self._restart_every, self._restart_mean = restart_every, restart_mean
        self._init = dict(init or {})
        self._search_space = None if search_space is None else dict(search_space)
        if self._search_space is not None:
            for name, dist in self._search_space.items():
                if not isinstance(dist, FloatDistribution) or dist.single():
                    raise ValueError(
                        f"search_space[{name!r}]: expected a FloatDistribution with low < high, "
                        f"got {dist!r}")
            self._initial_policy(_SearchSpaceTransform(self._search_space, transform_0_1=True),
                                 self._search_space)  # validates init and σ now
        self._independent = independent_sampler or optuna.samplers.RandomSampler(seed=seed)
        self._rng = np.random.RandomState(seed)
        self._warned = False

    @classmethod
    def for_simulator(
        cls, simulator: Any, init: str | Mapping[str, Any] = "default", **options: Any
    ) -> ReinforceSampler:
        """A sampler over ``simulator``'s ψ, starting at its declared init (``"default"``), the
        centre of the bounds (``"centre"``) or a given ψ (``{name: tensor}``, e.g. an
        adversarial start, or a learned ψ: a float32 value at a bound, which rounding can put just
        outside it, is taken as that bound)."""
        space = simulator.space
        if init == "default":
            params = space.to_params(simulator.init_psi())
        elif init == "centre":
            params = None
        elif isinstance(init, Mapping):
            space.check(init)  # within the bounds up to float32 rounding (ψ's tensors are float32)
            low, high = space.bounds()  # the exact float64 bounds the distributions hold
            params = dict(zip(space.flat_names(),
                              map(float, np.clip(space.to_flat(init), low, high)), strict=True))
        else:
            raise ValueError(f"init must be 'default', 'centre' or a ψ mapping, got {init!r}")
        return cls(search_space=space.search_space(), init=params, **options)

    def prepare(self, objective: Any) -> None:
        """Start at ``objective``'s simulator's declared ψ unless ``init`` was given (a harness
        building samplers by name calls this before optimising)."""
        if not self._init:
            self._init = objective.simulator.space.to_params(objective.simulator.init_psi())

    # -- Optuna's sampler interface -------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._rng.seed()
        self._independent.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        return self._float_space(study)

    def _float_space(self, study: optuna.Study) -> dict[str, BaseDistribution]:
        if self._search_space is not None:
            return dict(self._search_space)
        return {
            name: dist
            for name, dist in IntersectionSearchSpace().calculate(study).items()
            if isinstance(dist, FloatDistribution) and not dist.single()
        }

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space:
            return {}
        trans = _SearchSpaceTransform(search_space, transform_0_1=True)
        space = _fingerprint(search_space)
        initial = self._initial_policy(trans, search_space)
        generation = trial.number // self._k
        trials = study._get_trials(deepcopy=False, use_cache=True)
        waiting_since = None
        while True:
            replay = self._chain(study, trials, space).replay(
                self._k, initial, self._update, trans, study.direction, generation)
            if not replay.unfinished or any(self._mine.get(self._key(study, n)) == threading.get_ident()
                                            for n in replay.unfinished):
                break  # never wait on this thread's own trial: it may be an abandoned ``ask``
            from simsearch.workers import fail_stale_trials, tag_trial  # lazily: most runs never wait

            if waiting_since is None:
                waiting_since = time.monotonic()
                tag_trial(study._storage, trial._trial_id)  # alive to others' stale checks
                _logger.info("ReinforceSampler: trial %d (generation %d) waits for trials %s of "
                             "generation %d to finish", trial.number, generation,
                             replay.unfinished, replay.generation)
            elif time.monotonic() - waiting_since > self._wait_timeout:
                warnings.warn(
                    f"ReinforceSampler: trial {trial.number} (generation {generation}) waited "
                    f"{self._wait_timeout:g} s (wait_timeout) for trials {replay.unfinished} of "
                    f"generation {replay.generation} to finish; it is drawn from generation "
                    f"{replay.generation}'s policy instead and stays out of generation "
                    f"{generation}'s update", UserWarning, stacklevel=2)
                break
            time.sleep(self._poll)
            fail_stale_trials(study, self._wait_timeout)
            trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        policy = replay.policy
        record: dict[str, Any] = {"space": space, "k": self._k, "generation": generation,
                                  "drawn_from": replay.generation,
                                  "policy_id": _policy_id(policy.to_json())}
        if self._restart_every is not None:
            record["restart_every"] = self._restart_every
        if not replay.stored:
            record["policy"] = policy.to_json()
            if replay.used is not None:
                record["from_trials"] = replay.used
        draw = policy.mean + np.exp(policy.log_sigma) * self._rng.standard_normal(len(policy.mean))
        record["draw"] = draw.tolist()
        study._storage.set_trial_system_attr(trial._trial_id, _KEY, record)
        self._mine[self._key(study, trial.number)] = threading.get_ident()
        return _untransform(trans, draw)

    def _chain(self, study: optuna.Study, trials: Sequence[FrozenTrial], space: str,
               k: bool = True) -> _Chain:
        """The chain of ``space`` in ``study``'s ``trials``, refused if it was built with another K
        (unless ``k`` is False: a reader) or another restart_every. The study's leading finished
        trials are read once, into a :class:`_Prefix` cache, so a proposal reads only the trials
        after them (O(K) per proposal in a sequential study, not O(trials))."""
        key = (id(study._storage), study._study_id, space)
        with self._prefixes_lock:
            if key not in self._prefixes:
                self._prefixes[key] = _Prefix(study._storage)
            prefix = self._prefixes[key]
        chain = _Chain(trials, space, prefix.extend(trials, space))
        if k and chain.k not in (None, self._k):
            raise ValueError(
                f"this study's REINFORCE chain uses population_size K = {chain.k} (stored in its "
                f"trials); this sampler has K = {self._k}")
        if chain.k is not None and chain.restart_every != self._restart_every:
            raise ValueError(
                f"this study's REINFORCE chain uses restart_every = {chain.restart_every} (stored "
                f"in its trials); this sampler has restart_every = {self._restart_every}")
        return chain

    @staticmethod
    def _key(study: optuna.Study, number: int) -> tuple[int, int, int]:
        return id(study._storage), study._study_id, number

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        if not self._warned and (self._search_space is not None or any(
                t.state == TrialState.COMPLETE
                for t in study._get_trials(deepcopy=False, use_cache=True))):
            self._warned = True
            warnings.warn(
                f"ReinforceSampler models float parameters present in every trial only; "
                f"{param_name!r} ({type(param_distribution).__name__}) is sampled by "
                f"{type(self._independent).__name__} (int, categorical, conditional and dynamic "
                f"parameters fall back; this warning is shown once per sampler)",
                UserWarning, stacklevel=2)
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._mine[self._key(study, trial.number)] = threading.get_ident()
        self._independent.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent.after_trial(study, trial, state, values)

    # -- the learned policy --------------------------------------------------------------------
    def policy(self, study: optuna.Study) -> PolicySnapshot | None:
        """The newest policy of ``study``'s chain over this sampler's search space (the fixed
        one, else the float parameters of every completed trial): the one after the last update
        whose generations have all finished, replayed from storage with this sampler's settings
        where no trial stored it yet; None before any draw. It never waits."""
        replayed = self._replay_newest(study)
        if replayed is None:
            return None
        trans, replay = replayed
        return _snapshot(trans, replay.generation, replay.policy)

    def _replay_newest(
        self, study: optuna.Study, trace: list[tuple[int, np.ndarray, _Policy]] | None = None,
    ) -> tuple[_SearchSpaceTransform, _Replay] | None:
        """The chain of ``study`` replayed to its newest policy with this sampler's settings
        (and, with ``trace``, every update from generation 0 on); None before any draw."""
        space = self._float_space(study)
        if not space:
            return None
        chain = self._chain(study, study._get_trials(deepcopy=False), _fingerprint(space), k=False)
        if chain.k is None:
            return None
        trans = _SearchSpaceTransform(space, transform_0_1=True)
        return trans, chain.replay(chain.k, self._initial_policy(trans, space), self._update,
                                   trans, study.direction, None, trace)

    def best_policy(self, study: optuna.Study, last_generations: int = 10) -> PolicySnapshot | None:
        """The recommended policy over restarts: the policy each restart ended with (after its
        last finished update; for the restart in progress, the newest policy) whose last
        ``last_generations`` finished generations had the highest mean reward — the mean over
        their members that entered an update of the trials' values (negated for a
        ``minimize`` study), i.e. whatever the objective returns, a *validation* reward in
        :class:`simsearch.SimulatorObjective`; no test data is seen. Its ``score`` is that mean,
        ``restart`` its index and ``generation`` the number of updates the chain had made when
        it ended. Restarts without such members are not ranked; if none is, the newest policy
        (:meth:`policy`) is returned with ``score`` None. Without ``restart_every`` the newest
        policy is the only candidate. Replays the chain from generation 0 (O(trials)); None
        before any draw."""
        if isinstance(last_generations, bool) or not isinstance(last_generations, int) or (
                last_generations < 1):
            raise ValueError(f"last_generations must be an int >= 1, got {last_generations!r}")
        trace: list[tuple[int, np.ndarray, _Policy]] = []
        replayed = self._replay_newest(study, trace)
        if replayed is None:
            return None
        trans, replay = replayed
        ends: dict[int, tuple[int, _Policy]] = {}  # restart -> (generation it ended at, policy)
        rewards: dict[int, list[np.ndarray]] = {}
        for g, used_rewards, updated in trace:
            ends[updated.restart] = (g + 1, updated)
            rewards.setdefault(updated.restart, []).append(used_rewards)
        scores = {r: float(np.concatenate(rs[-last_generations:]).mean())
                  for r, rs in rewards.items() if np.concatenate(rs[-last_generations:]).size}
        if not scores:
            return _snapshot(trans, replay.generation, replay.policy)
        best = max(scores, key=lambda r: scores[r])  # ties: the earliest restart
        generation, policy = ends[best]
        return _snapshot(trans, generation, policy, scores[best])

    # -- policy construction and update ------------------------------------------------------
    def _initial_mean(
        self, trans: _SearchSpaceTransform, search_space: Mapping[str, BaseDistribution]
    ) -> np.ndarray:
        full = {}
        for name, dist in search_space.items():
            if name not in self._init:
                full[name] = dist.to_external_repr(dist.to_internal_repr(
                    dist.choices[0] if hasattr(dist, "choices") else dist.low))
                continue
            value = self._init[name]
            try:
                inside = dist._contains(dist.to_internal_repr(value))
            except (TypeError, ValueError):
                inside = False
            if not inside:
                raise ValueError(f"init[{name!r}]: expected a value of {dist!r}, got {value!r}")
            full[name] = value
        mean = trans.transform(full)
        for name, columns in zip(search_space, trans.column_to_encoded_columns, strict=True):
            if name not in self._init:
                mean[columns] = 0.5
        return np.clip(mean, 0.0, 1.0)

    def _initial_policy(
        self, trans: _SearchSpaceTransform, search_space: Mapping[str, BaseDistribution]
    ) -> _Policy:
        mean = self._initial_mean(trans, search_space)
        d = len(mean)
        sigma = np.full(d, self._sigma)
        if self._sigma_units == "param":
            sigma = sigma / (trans._raw_bounds[:, 1] - trans._raw_bounds[:, 0])
        if np.any((sigma < self._min_sigma) | (sigma > _SIGMA_RANGE[1])):
            raise ValueError(f"sigma = {self._sigma:g} ({self._sigma_units}) gives unit-box σ "
                             f"{sigma.min():.3g}…{sigma.max():.3g} outside "
                             f"[{self._min_sigma:g}, {_SIGMA_RANGE[1]:g}] (min_sigma, 1)")
        moments = (np.zeros(2 * d), np.zeros(2 * d), 0) if self._optimizer == "adam" else None
        return _Policy(mean, np.log(sigma), None, moments)

    def _update(self, policy: _Policy, initial: _Policy, draws: np.ndarray, rewards: np.ndarray,
                generation: int) -> tuple[_Policy, _Policy]:
        """Generation ``generation``'s update from its usable members' draws (K', d) and rewards
        (K',): the policy after the step of Eq. 4 (unchanged if K' = 0) and the policy generation
        g + 1 draws from — the same one, or after every G-th generation (``restart_every``) a
        restart (:meth:`_restart`)."""
        updated = self._step(policy, draws, rewards, generation) if len(rewards) else policy
        if self._restart_every is None or (generation + 1) % self._restart_every:
            return updated, updated
        return updated, self._restart(initial, draws, rewards, generation)

    def _restart(self, initial: _Policy, draws: np.ndarray, rewards: np.ndarray,
                 generation: int) -> _Policy:
        """The policy restart r = (g + 1) / G starts from, after generation g: σ, the baseline and
        the optimiser's state are the initial policy's, ω the initial ω (``restart_mean="init"``)
        or a uniform draw in the unit box seeded by a SHA-256 digest of g and the finished
        generation's usable draws and rewards — values every process reads identically from
        storage, so all of them compute the same restart, and seeded runs repeat it."""
        mean = initial.mean
        if self._restart_mean == "uniform":
            digest = hashlib.sha256(json.dumps(
                [generation, draws.tolist(), rewards.tolist()]).encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
            mean = rng.uniform(0.0, 1.0, len(initial.mean))
        return _Policy(mean, initial.log_sigma, None, initial.moments,
                       (generation + 1) // self._restart_every)

    def _step(self, policy: _Policy, draws: np.ndarray, rewards: np.ndarray,
              generation: int) -> _Policy:
        """Generation ``generation``'s gradient-ascent step of Eq. 4 from K draws (K, d) and their
        rewards (K,). With restarts, the step-size decay counts generations from the policy's
        restart (g mod G)."""
        mean_reward = float(rewards.mean())
        baseline = mean_reward if policy.baseline is None else policy.baseline
        advantage = rewards - baseline  # Â_k of Eq. 4
        if self._normalize:
            spread = advantage.std()
            advantage = (advantage - advantage.mean()) / spread if spread > 0 else np.zeros_like(advantage)
        sigma = np.exp(policy.log_sigma)
        z = (draws - policy.mean) / sigma
        grad_mean = (advantage[:, None] * z / sigma).mean(axis=0)  # ∇_ω log N(x; ω, σ²) = (x−ω)/σ²
        grad_log_sigma = (advantage[:, None] * (z**2 - 1.0)).mean(axis=0)  # ∇_{log σ} log N
        grad_log_sigma = grad_log_sigma + self._entropy  # β ∂H/∂log σ_i = β
        theta = np.concatenate([policy.mean, policy.log_sigma])
        grad = np.concatenate([grad_mean, grad_log_sigma if self._learn_sigma else np.zeros(len(sigma))])
        lr = self._lr  # generation g's step size: lr / √(1 + g/τ) with lr_decay = τ
        if self._lr_decay is not None:
            since = generation if self._restart_every is None else generation % self._restart_every
            lr = lr / math.sqrt(1.0 + since / self._lr_decay)
        moments = None
        if policy.moments is None:
            theta = theta + lr * grad
        else:
            m, v, t = policy.moments
            (b1, b2), t = _ADAM_BETAS, t + 1
            m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
            theta = theta + lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + _ADAM_EPS)
            moments = (m, v, t)
        d = len(policy.mean)
        lo, hi = np.log(self._min_sigma), np.log(_SIGMA_RANGE[1])
        new_baseline = self._decay * baseline + (1 - self._decay) * mean_reward
        return _Policy(np.clip(theta[:d], 0.0, 1.0), np.clip(theta[d:], lo, hi), new_baseline,
                       moments, policy.restart)


@dataclass(frozen=True)
class _Replay:
    """The policy of ``generation`` (``stored``: read from a trial, else computed here), the trial
    numbers its last update used if computed here (else None), and, if the replay stopped short of
    the generation asked for, the unfinished members of ``generation`` that blocked it."""

    generation: int
    policy: _Policy
    stored: bool
    used: list[int] | None
    unfinished: list[int]


class _Prefix:
    """The leading finished trials 0, …, L − 1 of one study and their chain records over one search
    space, read once per sampler rather than once per proposal: a finished trial never changes
    (Optuna refuses to update it), so what :class:`_Chain` reads from it is final. Append-only,
    extended under a lock; it grows only over trials whose position in the storage's list (which
    Optuna's storages return in number order) is their number. A chain built on it reads the
    entries below the length it saw, and its own trial list above; an entry the cache gained from
    another thread's newer list is a finished trial as that list shows it, which equals reading a
    moment later."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # held, so that the id() keying this cache stays this storage's
        self.trials: list[FrozenTrial] = []
        self.records: list[dict[str, Any] | None] = []
        self.stored: list[int] = []  # generations with a stored policy, in order of first copy
        self.policies: dict[int, dict[str, Any]] = {}  # generation -> lowest-numbered copy
        self.ks: set[int] = set()
        self.gs: set[int | None] = set()
        self.lock = threading.Lock()

    def extend(self, trials: Sequence[FrozenTrial], space: str) -> _PrefixView:
        """Take in the finished trials that continue the prefix; the view a chain reads."""
        with self.lock:
            n = len(self.trials)
            while n < len(trials) and trials[n].number == n and trials[n].state.is_finished():
                record = _record(trials[n], space)
                self.trials.append(trials[n])
                self.records.append(record)
                if record is not None:
                    self.ks.add(record["k"])
                    self.gs.add(record.get("restart_every"))
                    if "policy" in record and record["drawn_from"] not in self.policies:
                        self.policies[record["drawn_from"]] = record["policy"]
                        self.stored.append(record["drawn_from"])
                n += 1
            return _PrefixView(self, n, len(self.stored), set(self.ks), set(self.gs))


@dataclass(frozen=True)
class _PrefixView:
    """The first ``length`` trials of a :class:`_Prefix`, with its first ``n_stored`` stored
    policies and the K and restart_every values their records carry."""

    prefix: _Prefix | None
    length: int
    n_stored: int
    ks: set[int]
    gs: set[int | None]


_EMPTY = _PrefixView(None, 0, 0, set(), set())


def _record(trial: FrozenTrial, space: str) -> dict[str, Any] | None:
    """The trial's chain record over ``space`` (None: no draw of that space's policy)."""
    r = trial.system_attrs.get(_KEY)
    return r if r is not None and r.get("space") == space and "drawn_from" in r else None


class _Chain:
    """The policy chain of one search space, read from a study's trials (see the module's rule);
    with ``view``, trials below ``view.length`` are read from a :class:`_Prefix` cache."""

    def __init__(self, trials: Sequence[FrozenTrial], space: str,
                 view: _PrefixView = _EMPTY) -> None:
        self.prefix, self.length = view.prefix, view.length
        self.tail = {t.number: t for t in trials[view.length:]}
        self.tail_records: dict[int, dict[str, Any]] = {}
        self.stored: dict[int, dict[str, Any]] = {}  # generation -> lowest-numbered stored policy
        if view.prefix is not None:
            for g in view.prefix.stored[:view.n_stored]:
                self.stored[g] = view.prefix.policies[g]
        for number in sorted(self.tail):
            r = _record(self.tail[number], space)
            if r is not None:
                self.tail_records[number] = r
                if "policy" in r:
                    self.stored.setdefault(r["drawn_from"], r["policy"])
        ks = view.ks | {r["k"] for r in self.tail_records.values()}
        if len(ks) > 1:
            raise ValueError(f"the study's REINFORCE chain mixes population sizes {sorted(ks)}")
        self.k = ks.pop() if ks else None
        gs = view.gs | {r.get("restart_every") for r in self.tail_records.values()}
        if len(gs) > 1:
            raise ValueError(f"the study's REINFORCE chain mixes restart_every values "
                             f"{sorted(gs, key=str)}")
        self.restart_every = gs.pop() if gs else None

    def trial(self, number: int) -> FrozenTrial | None:
        if number < self.length:
            return self.prefix.trials[number]
        return self.tail.get(number)

    def record(self, number: int) -> dict[str, Any] | None:
        if number < self.length:
            return self.prefix.records[number]
        return self.tail_records.get(number)

    def replay(
        self, k: int, initial: _Policy, update: Any, trans: _SearchSpaceTransform,
        direction: StudyDirection, upto: int | None,
        trace: list[tuple[int, np.ndarray, _Policy]] | None = None,
    ) -> _Replay:
        """The policy of generation ``upto`` (None: the newest one whose earlier generations have
        all finished), from the newest stored policy at or before it, applying ``update`` once
        per finished generation; stops at the first generation with an unfinished member. With
        ``trace``, it starts at generation 0 and appends (g, the usable members' rewards, the
        policy after g's step, before any restart) for every finished generation."""
        if trace is None:
            start = max((g for g in self.stored if upto is None or g <= upto), default=None)
        else:
            start = 0 if 0 in self.stored else None
        g, policy = (0, initial) if start is None else (start, _Policy.from_json(self.stored[start]))
        stored, used = start is not None, None
        sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
        while upto is None or g < upto:
            members = range(g * k, (g + 1) * k)
            unfinished = [n for n in members
                          if (t := self.trial(n)) is None or not t.state.is_finished()]
            if unfinished:
                return _Replay(g, policy, stored, used, unfinished)
            policy_id = _policy_id(policy.to_json())
            used = [n for n in members if self._usable(n, policy_id, trans)]
            draws = np.array([self.record(n)["draw"] for n in used],
                             dtype=np.float64).reshape(len(used), len(policy.mean))
            rewards = np.array([sign * self.trial(n).value for n in used], dtype=np.float64)
            updated, policy = update(policy, initial, draws, rewards, g)
            if trace is not None:
                trace.append((g, rewards, updated))
            g, stored = g + 1, False
        return _Replay(g, policy, stored, used, [])

    def _usable(self, number: int, policy_id: str, trans: _SearchSpaceTransform) -> bool:
        """Whether a finished member enters its generation's update: COMPLETE, drawn from the
        generation's policy, parameters exactly its draw."""
        trial, record = self.trial(number), self.record(number)
        return (trial.state == TrialState.COMPLETE and record is not None
                and record["policy_id"] == policy_id and _proposed(trial, record["draw"], trans))


def _proposed(trial: FrozenTrial, draw: Sequence[float], trans: _SearchSpaceTransform) -> bool:
    """Whether the trial's parameters are exactly what its draw proposed."""
    proposal = _untransform(trans, np.asarray(draw, dtype=np.float64))
    for name, value in proposal.items():
        if name not in trial.params:
            return False
        actual = trial.params[name]
        if isinstance(value, float):
            if not math.isclose(actual, value, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif actual != value:
            return False
    return True


def _snapshot(trans: _SearchSpaceTransform, generation: int, policy: _Policy,
              score: float | None = None) -> PolicySnapshot:
    return PolicySnapshot(generation, _untransform(trans, policy.mean), np.exp(policy.log_sigma),
                          policy.baseline, policy.restart, score)


def _untransform(trans: _SearchSpaceTransform, point: np.ndarray) -> dict[str, Any]:
    """Parameter values (Python scalars) of a unit-box point, clipped onto the box."""
    params = trans.untransform(np.clip(point, 0.0, 1.0))
    return {name: v.item() if isinstance(v, np.generic) else v for name, v in params.items()}
