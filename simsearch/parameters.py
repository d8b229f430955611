"""Simulator parameters ψ: declaration, validation and their Optuna search space.

A parameter is declared once, by name, with a shape, bounds and an initial value (the "hand-tuned"
default). Learning to Simulate §2.3 models every simulator input as an unconstrained real value
(a discrete choice is K logits normalised by a softmax); AutoSimulate §4.1 calls the same vector ψ.
Optuna sees each scalar component as a ``FloatDistribution``: a scalar parameter keeps its name, the
components of a vector parameter are called ``name[i]`` (``name[i,j]`` for matrices).

>>> space = ParameterSpace([Parameter("p_car", 0.05, 0.95, 0.5),
...                         Parameter("logits", -3.0, 3.0, 0.0, shape=(2,))])
>>> sorted(space.search_space())
['logits[0]', 'logits[1]', 'p_car']
>>> psi = space.from_params({"p_car": 0.2, "logits[0]": 1.0, "logits[1]": -1.0})
>>> psi["logits"].tolist()
[1.0, -1.0]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import torch

__all__ = ["Parameter", "ParameterSpace", "Psi"]

Psi = dict[str, torch.Tensor]
"""Simulator parameters: one float tensor of the declared shape per parameter name."""


def _as_array(value: float | Sequence[float] | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()


@dataclass(frozen=True)
class Parameter:
    """One declared simulator parameter.

    Args:
        name: identifier; used as the Optuna parameter name (components get ``[i]`` suffixes).
        low, high: bounds, scalars or arrays broadcastable to ``shape``; ``low < high`` everywhere.
        init: the default ("hand-tuned") value, broadcastable to ``shape``, inside the bounds.
        shape: ``()`` for a scalar, ``(k,)`` for a vector, ... Every dimension must be ≥ 1.
        doc: one line saying what the parameter controls.
    """

    name: str
    low: float | Sequence[float] | np.ndarray
    high: float | Sequence[float] | np.ndarray
    init: float | Sequence[float] | np.ndarray
    shape: tuple[int, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        where = f"parameter {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"{where}: name must be a Python identifier, got {self.name!r}")
        shape = tuple(self.shape)
        if any((not isinstance(d, int)) or d < 1 for d in shape):
            raise ValueError(f"{where}: every dimension of shape must be an int >= 1, got {shape}")
        object.__setattr__(self, "shape", shape)
        for field in ("low", "high", "init"):
            try:
                arr = _as_array(getattr(self, field), shape)
            except ValueError as exc:
                raise ValueError(
                    f"{where}: {field} must broadcast to shape {shape}, "
                    f"got {np.shape(getattr(self, field))}"
                ) from exc
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{where}: {field} must be finite, got {arr.tolist()}")
        low, high, init = self.low_array, self.high_array, self.init_array
        if np.any(low >= high):
            raise ValueError(
                f"{where}: expected low < high, got low={low.tolist()}, high={high.tolist()}"
            )
        if np.any((init < low) | (init > high)):
            raise ValueError(
                f"{where}: init must lie in [low, high] = [{low.tolist()}, {high.tolist()}], "
                f"got {init.tolist()}"
            )

    @property
    def low_array(self) -> np.ndarray:
        return _as_array(self.low, self.shape)

    @property
    def high_array(self) -> np.ndarray:
        return _as_array(self.high, self.shape)

    @property
    def init_array(self) -> np.ndarray:
        return _as_array(self.init, self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def component_names(self) -> list[str]:
        """Optuna names of the scalar components, in C (row-major) order."""
        if not self.shape:
            return [self.name]
        return [
            f"{self.name}[{','.join(map(str, idx))}]"
            for idx in itertools.product(*(range(d) for d in self.shape))
        ]


class ParameterSpace:
    """An ordered, validated collection of :class:`Parameter` declarations."""

    def __init__(self, parameters: Iterable[Parameter]) -> None:
        params = list(parameters)
        if not params:
            raise ValueError("a simulator must declare at least one parameter, got none")
        seen: set[str] = set()
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"expected Parameter declarations, got {type(p).__name__}")
            if p.name in seen:
                raise ValueError(f"parameter {p.name!r} is declared more than once")
            seen.add(p.name)
        self.parameters: tuple[Parameter, ...] = tuple(params)
        self._by_name = {p.name: p for p in params}

    def __iter__(self):
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __getitem__(self, name: str) -> Parameter:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def dim(self) -> int:
        """Total number of scalar components."""
        return sum(p.size for p in self.parameters)

    def flat_names(self) -> list[str]:
        return [n for p in self.parameters for n in p.component_names()]

    def search_space(self) -> dict[str, optuna.distributions.FloatDistribution]:
        """Optuna distributions of every scalar component, keyed by flat name."""
        space = {}
        for p in self.parameters:
            for n, lo, hi in zip(
                p.component_names(), p.low_array.ravel(), p.high_array.ravel(), strict=True
            ):
                space[n] = optuna.distributions.FloatDistribution(float(lo), float(hi))
        return space

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (low, high) arrays in :meth:`flat_names` order."""
        low = np.concatenate([p.low_array.ravel() for p in self.parameters])
        high = np.concatenate([p.high_array.ravel() for p in self.parameters])
        return low, high

    def init_psi(self) -> Psi:
        """The declared initial values."""
        return {p.name: torch.tensor(p.init_array, dtype=torch.float32) for p in self.parameters}

    def suggest(self, trial: optuna.Trial) -> Psi:
        """Ask ``trial`` for every component and return ψ."""
        params = {
            name: trial.suggest_float(name, dist.low, dist.high)
            for name, dist in self.search_space().items()
        }
        return self.from_params(params)

    def from_params(self, params: Mapping[str, float]) -> Psi:
        """ψ from a flat mapping such as ``trial.params``; extra keys (a user's own
        hyper-parameters in the same study) are ignored, missing ones are an error."""
        missing = [n for n in self.flat_names() if n not in params]
        if missing:
            raise KeyError(f"missing simulator parameters {missing}; expected {self.flat_names()}")
        return self.from_flat([float(params[n]) for n in self.flat_names()])

    def from_flat(self, values: Sequence[float] | np.ndarray | torch.Tensor) -> Psi:
        """ψ from a flat vector in :meth:`flat_names` order."""
        flat = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)
        if flat.numel() != self.dim:
            raise ValueError(f"expected {self.dim} values for ψ, got {flat.numel()}")
        psi, i = {}, 0
        for p in self.parameters:
            psi[p.name] = flat[i : i + p.size].reshape(p.shape).clone()
            i += p.size
        return psi

    def to_flat(self, psi: Mapping[str, torch.Tensor | float | Sequence[float]]) -> np.ndarray:
        """Flat float64 vector of ψ in :meth:`flat_names` order (checks names and shapes)."""
        self.check(psi, check_bounds=False)
        return np.concatenate(
            [np.asarray(torch.as_tensor(psi[p.name]).detach().cpu(), np.float64).ravel()
             for p in self.parameters]
        )

    def to_params(self, psi: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Flat ``{optuna name: value}`` mapping of ψ."""
        return dict(zip(self.flat_names(), map(float, self.to_flat(psi)), strict=True))

    def clip(self, psi: Mapping[str, torch.Tensor]) -> Psi:
        """ψ projected onto the box of bounds."""
        low, high = self.bounds()
        return self.from_flat(np.clip(self.to_flat(psi), low, high))

    def check(self, psi: Mapping[str, object], check_bounds: bool = True) -> None:
        """Raise a ``ValueError`` naming the offending parameter if ψ is malformed."""
        unknown = sorted(set(psi) - set(self._by_name))
        missing = [n for n in self.names if n not in psi]
        if unknown or missing:
            raise ValueError(
                f"ψ must hold exactly the parameters {self.names}; "
                f"missing {missing}, unknown {unknown}"
            )
        for p in self.parameters:
            value = torch.as_tensor(psi[p.name]).detach()
            if tuple(value.shape) != p.shape:
                raise ValueError(
                    f"parameter {p.name!r}: expected shape {p.shape}, got {tuple(value.shape)}"
                )
            arr = value.cpu().double().numpy()
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"parameter {p.name!r}: expected finite values, got {arr.tolist()}")
            if check_bounds:
                tol = 1e-6 * np.maximum(1.0, np.abs(p.high_array - p.low_array))
                if np.any(arr < p.low_array - tol) or np.any(arr > p.high_array + tol):
                    raise ValueError(
                        f"parameter {p.name!r}: expected values in "
                        f"[{_fmt(p.low_array)}, {_fmt(p.high_array)}], got {_fmt(arr)}"
                    )


def _fmt(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return f"{float(arr):g}"
    return "[" + ", ".join(f"{v:g}" if math.isfinite(v) else str(v) for v in arr.ravel()) + "]"
