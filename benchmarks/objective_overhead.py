"""Time one SimulatorObjective trial against a hand-written PyTorch loop doing the same work.

The objective's trial is ``objective.evaluate(trial, ψ)`` (simulate, build the model, train with
per-epoch evaluation and reporting, record the user attrs); Optuna's own ask / tell is not timed.
Same problem (gmm2d), same data size (simulated from the default ψ), same network and
initialisation, same optimiser, M = 1,000 samples, ξ = 5 epochs, batch size 100, and the validation
metric computed after every epoch (the objective reports it to Optuna for pruning). Both are timed
alternately, after warm-up, and the medians are compared. Goal: ratio <= 1.3.

    .venv/bin/python benchmarks/objective_overhead.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import optuna
import torch

from simsearch.objective import trial_seed
from simsearch.problems import get


def hand_loop(problem, psi, n: int, epochs: int, batch_size: int, seed: int) -> float:
    batch = problem.simulator.simulate(psi, n, seed)
    torch.manual_seed(seed)
    module = problem.make_model()
    net, loss_fn, metric = module.net, module.loss_fn, module.metric_fn
    opt = torch.optim.Adam(net.parameters(), lr=module.lr)
    gen = torch.Generator().manual_seed(seed)
    x_val, y_val = problem.val
    reward = float("nan")
    for _ in range(epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(net(batch.x[idx]), batch.y[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            reward = float(metric(net(x_val), y_val))
    return reward


def measure(problem, n: int, epochs: int, batch_size: int, repeats: int) -> tuple[float, float]:
    """Median seconds of an objective trial and of the hand loop, timed alternately."""
    objective = problem.objective(n_samples=n, epochs=epochs, batch_size=batch_size)
    psi = problem.simulator.init_psi()
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())

    def one_trial() -> float:
        """The objective's work for one trial, timed without Optuna's ask / tell."""
        trial = study.ask(problem.simulator.search_space())
        start = time.perf_counter()
        value = objective.evaluate(trial, psi)
        seconds = time.perf_counter() - start
        study.tell(trial, value)
        return seconds

    seed = trial_seed(0, 0)
    for _ in range(3):  # warm-up both paths
        one_trial()
        hand_loop(problem, psi, n, epochs, batch_size, seed)
    t_obj, t_hand = [], []
    for _ in range(repeats):
        t_obj.append(one_trial())
        start = time.perf_counter()
        hand_loop(problem, psi, n, epochs, batch_size, seed)
        t_hand.append(time.perf_counter() - start)
    return statistics.median(t_obj), statistics.median(t_hand)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    problem = get("gmm2d")
    n, epochs, batch_size = 1000, 5, 100
    one = measure(problem, n, 1, batch_size, args.repeats)
    m_obj, m_hand = measure(problem, n, epochs, batch_size, args.repeats)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 torch thread")
    print(f"gmm2d, M={n}, xi={epochs}, batch {batch_size}, {args.repeats} repeats")
    print(f"objective trial median: {m_obj * 1e3:.1f} ms")
    print(f"hand-written loop median: {m_hand * 1e3:.1f} ms")
    print(f"ratio objective / hand loop: {m_obj / m_hand:.2f} (goal <= 1.3)")
    for name, five, single in (("objective", m_obj, one[0]), ("hand loop", m_hand, one[1])):
        per_epoch = (five - single) / (epochs - 1)
        print(f"{name}: {per_epoch * 1e3:.1f} ms per epoch + {(single - per_epoch) * 1e3:.1f} ms fixed "
              f"(from xi=1: {single * 1e3:.1f} ms and xi={epochs})")


if __name__ == "__main__":
    main()
