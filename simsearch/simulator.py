"""Simulators: parameters ψ, a stochastic part q_ψ(s) and a deterministic renderer r(s).

Both papers split a simulator the same way: Learning to Simulate §2.3 writes G(x, y | ψ) =
R(S(ρ | ψ), P(φ | ψ)), a sampling step followed by a deterministic rendering process; AutoSimulate
§4.1, Eq. 9, writes ζ = r(s) with s ~ q_ψ(s). :class:`Simulator` asks for exactly those two pieces:

* ``distributions(psi, n)`` — q_ψ as ``torch.distributions`` objects, one batched draw per sample.
  Because they are torch distributions, ``log_prob`` is differentiable in ψ, which AutoSimulate's
  score-function estimator (Eq. 11) needs.
* ``render(latents)`` — the deterministic, batched, possibly non-differentiable renderer.

A simulator with no tractable q_ψ (an external renderer, a game engine) subclasses
:class:`BlackBoxSimulator` and implements ``sample`` only; black-box samplers (random, TPE, GP, CMA-ES,
BO, REINFORCE) work with it, gradient-based ones refuse it.

Example — a 1-D two-class simulator whose class means are ψ:

>>> import torch
>>> from torch.distributions import Bernoulli, Normal
>>> class TwoBumps(Simulator):
...     def __init__(self):
...         super().__init__([Parameter("mu", -3.0, 3.0, [-1.0, 1.0], shape=(2,))])
...     def distributions(self, psi, n):
...         y = Bernoulli(probs=torch.full((n,), 0.5))
...         return {"y": y, "u": Normal(torch.zeros(n), torch.ones(n))}
...     def render(self, latents):
...         y = latents["y"].long()
...         return (latents["u"] + torch.tensor([-1.0, 1.0])[y]).unsqueeze(1), y
>>> sim = TwoBumps()
>>> batch = sim.simulate(sim.init_psi(), n=4, seed=0)
>>> batch.x.shape, batch.y.shape
(torch.Size([4, 1]), torch.Size([4]))
>>> bool(torch.equal(batch.x, sim.simulate(sim.init_psi(), n=4, seed=0).x))
True
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch
from torch.distributions import Distribution

from simsearch.parameters import Parameter, ParameterSpace, Psi

__all__ = [
    "BaseSimulator", "BlackBoxSimulator", "LatentSpec", "SimulatedBatch", "Simulator",
    "one_torch_thread",
]

LatentSpec = Distribution | Callable[[dict[str, torch.Tensor]], Distribution]
"""A latent's distribution, or a function of the latents drawn before it returning one."""


@dataclass
class SimulatedBatch:
    """One simulated data set: the latents s_k (empty for black-box simulators) and (x, y)."""

    latents: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


class BaseSimulator(abc.ABC):
    """What every simulator has: declared parameters and ``simulate(psi, n, seed)``."""

    #: True when the simulator exposes q_ψ and ``log_prob`` (needed by AutoSimulate).
    has_log_prob: bool = False

    def __init__(self, parameters: Iterable[Parameter]) -> None:
        self.space = ParameterSpace(parameters)

    # -- parameters -------------------------------------------------------------------------
    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return self.space.parameters

    def search_space(self) -> dict[str, optuna.distributions.FloatDistribution]:
        """Optuna ``FloatDistribution`` per scalar component (``name`` / ``name[i]``)."""
        return self.space.search_space()

    def suggest(self, trial: optuna.Trial) -> Psi:
        """Suggest every component of ψ from ``trial`` (works inside any objective)."""
        return self.space.suggest(trial)

    def init_psi(self) -> Psi:
        """The declared initial ("hand-tuned") ψ."""
        return self.space.init_psi()

    # -- data -------------------------------------------------------------------------------
    def simulate(self, psi: Mapping[str, torch.Tensor], n: int, seed: int) -> SimulatedBatch:
        """Draw a labelled data set of ``n`` samples from ψ; the same seed gives the same batch."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of samples) must be an int >= 1, got {n!r}")
        self.space.check(psi)
        psi = {k: torch.as_tensor(v, dtype=torch.float32).detach() for k, v in psi.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            generator = torch.Generator().manual_seed(int(seed))
            batch = self._draw(psi, n, generator)
        _check_batch(batch, n, type(self).__name__)
        return batch

    @abc.abstractmethod
    def _draw(self, psi: Psi, n: int, generator: torch.Generator) -> SimulatedBatch:
        """Draw ``n`` samples; the global torch RNG and ``generator`` are both seeded."""

    def log_prob(self, latents: Mapping[str, torch.Tensor], psi: Mapping[str, torch.Tensor]):
        raise NotImplementedError(
            f"{type(self).__name__} is a black-box simulator: it has no tractable q_ψ(s), so "
            "log_prob (and gradient-based samplers such as AutoSimulate) are not available"
        )


class Simulator(BaseSimulator):
    """A simulator with an explicit stochastic part q_ψ(s) and a deterministic renderer r(s).

    Subclasses implement :meth:`distributions` and :meth:`render`. Latents are sampled
    independently given ψ (a latent the renderer ignores for a given sample, e.g. a car in a block
    beyond the road's end, still has a well-defined log-probability).
    """

    has_log_prob = True

    @abc.abstractmethod
    def distributions(self, psi: Psi, n: int) -> dict[str, LatentSpec]:
        """q_ψ(s): one torch distribution per latent, whose ``sample()`` has leading size ``n``.

        Latents are drawn in the dict's order (ancestral sampling of a Bayesian network, LTS §2.3):
        a value may be a callable ``f(latents_so_far) -> Distribution`` for a latent that depends
        on earlier ones. Build the distributions from ψ with differentiable torch operations, so
        that :meth:`log_prob` is differentiable in ψ.
        """

    @abc.abstractmethod
    def render(self, latents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """r(s): deterministic, batched; returns (x, y) with ``len(x) == len(y) == n``."""

    def _draw(self, psi: Psi, n: int, generator: torch.Generator) -> SimulatedBatch:
        latents: dict[str, torch.Tensor] = {}
        for name, spec in self.distributions(psi, n).items():
            dist = spec(latents) if callable(spec) else spec
            value = dist.sample()
            if value.dim() == 0 or value.shape[0] != n:
                raise ValueError(
                    f"{type(self).__name__}.distributions(): latent {name!r} must have batch "
                    f"size n={n} (one draw per sample), got shape {tuple(value.shape)}"
                )
            latents[name] = value
        x, y = self.render(latents)
        return SimulatedBatch(latents=latents, x=x, y=y)

    def log_prob(
        self, latents: Mapping[str, torch.Tensor], psi: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """log q_ψ(s_k) for every sample k, shape ``(n,)``, differentiable in ψ.

        Pass ψ tensors with ``requires_grad=True`` to get ∇_ψ log q_ψ(s_k) (AutoSimulate Eq. 11).
        """
        self.space.check(psi, check_bounds=False)
        n = next(iter(latents.values())).shape[0]
        specs = self.distributions(dict(psi), n)
        if set(specs) != set(latents):
            raise ValueError(
                f"latents {sorted(latents)} do not match the simulator's {sorted(specs)}"
            )
        total = torch.zeros(n, dtype=torch.float32)
        for name, spec in specs.items():
            dist = spec(dict(latents)) if callable(spec) else spec
            lp = dist.log_prob(latents[name])
            total = total + lp.reshape(n, -1).sum(dim=1)
        return total


class BlackBoxSimulator(BaseSimulator):
    """A simulator that can only be run: implement :meth:`sample`.

    Every black-box sampler works with it; AutoSimulate refuses it (no q_ψ, no log-probability).
    """

    has_log_prob = False

    @abc.abstractmethod
    def sample(
        self, psi: Psi, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) for ``n`` samples drawn with ``generator`` (or the seeded global RNG)."""

    def _draw(self, psi: Psi, n: int, generator: torch.Generator) -> SimulatedBatch:
        x, y = self.sample(psi, n, generator)
        return SimulatedBatch(latents={}, x=x, y=y)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore torch's setting.

    For renderers that are memory-bound or made of many small batched ops (the traffic and digit
    renderers): a second thread adds little on two cores, and every parallel region waits for its
    slowest thread, so on a shared machine torch's default (one thread per core) made rendering up
    to 3× slower than one thread (issue 3). Inside, rendering speed does not depend on
    ``torch.set_num_threads``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_batch(batch: SimulatedBatch, n: int, who: str) -> None:
    x, y = batch.x, batch.y
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{who}: the renderer must return torch tensors (x, y), got "
            f"({type(x).__name__}, {type(y).__name__})"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{who}: the renderer returned x and y of different lengths: "
            f"len(x)={x.shape[0]}, len(y)={y.shape[0]}"
        )
    if x.shape[0] != n:
        raise ValueError(f"{who}: expected {n} samples from the renderer, got {x.shape[0]}")
