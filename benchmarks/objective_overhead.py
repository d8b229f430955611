"""Time one SimulatorObjective trial against a hand-written PyTorch loop doing the same work.

The objective's trial is ``objective.evaluate(trial, ψ)`` (simulate, build the model, train with
per-epoch evaluation and reporting, record the user attrs); Optuna's own ask / tell is not timed.
Same problem (gmm2d), same data size (simulated from the default ψ), same network and
initialisation, same optimiser, M = 1,000 samples, ξ = 5 epochs, batch size 100, and the validation
metric computed after every epoch (the objective reports it to Optuna for pruning). Both are timed
alternately, after warm-up, and the medians are compared, in wall time and in CPU time of the
running thread. Goal: ratio <= 1.3.

    .venv/bin/python benchmarks/objective_overhead.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
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


def measure(problem, n: int, epochs: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Median wall and CPU (this thread) seconds of an objective trial and of the hand loop,
    timed alternately. CPU time is what the objective adds; wall time also counts waiting for a
    core, which on a shared machine comes and goes between the two."""
    objective = problem.objective(n_samples=n, epochs=epochs, batch_size=batch_size)
    psi = problem.simulator.init_psi()
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    seed = trial_seed(0, 0)

    def timed(work) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        work()
        return time.perf_counter() - wall, time.thread_time() - cpu

    def one_trial() -> tuple[float, float]:
        """The objective's work for one trial, timed without Optuna's ask / tell."""
        trial = study.ask(problem.simulator.search_space())
        seconds = timed(lambda: values.append(objective.evaluate(trial, psi)))
        study.tell(trial, values[-1])
        return seconds

    def one_hand_loop() -> tuple[float, float]:
        return timed(lambda: hand_loop(problem, psi, n, epochs, batch_size, seed))

    values: list[float] = []
    for _ in range(3):  # warm-up both paths
        one_trial()
        one_hand_loop()
    runs = [(one_trial(), one_hand_loop()) for _ in range(repeats)]
    return {
        f"{who} {clock}": statistics.median(run[i][j] for run in runs)
        for i, who in enumerate(("objective", "hand loop"))
        for j, clock in enumerate(("wall", "cpu"))
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    problem = get("gmm2d")
    n, epochs, batch_size = 1000, 5, 100
    one = measure(problem, n, 1, batch_size, args.repeats)
    five = measure(problem, n, epochs, batch_size, args.repeats)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 torch thread")
    print(f"gmm2d, M={n}, xi={epochs}, batch {batch_size}, {args.repeats} repeats")
    for clock in ("wall", "cpu"):
        obj, hand = five[f"objective {clock}"], five[f"hand loop {clock}"]
        print(f"{clock}: objective trial median {obj * 1e3:.1f} ms, hand-written loop median "
              f"{hand * 1e3:.1f} ms, ratio {obj / hand:.2f} (goal <= 1.3)")
        for who in ("objective", "hand loop"):
            single, whole = one[f"{who} {clock}"], five[f"{who} {clock}"]
            per_epoch = (whole - single) / (epochs - 1)
            print(f"  {who}: {per_epoch * 1e3:.1f} ms per epoch + {(single - per_epoch) * 1e3:.1f} "
                  f"ms fixed (from xi=1: {single * 1e3:.1f} ms and xi={epochs})")


if __name__ == "__main__":
    main()
