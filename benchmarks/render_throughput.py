"""Rendering throughput of the vision simulators: batched vs a naive per-image loop (issue 3).

For each simulator, a batch of ``--batch`` (1,000) latents is drawn once; then, timed in the same
run: ``simulate(ψ, batch)`` (sampling + rendering), ``render(latents)`` of the whole batch, and the
same ``render`` called on one image at a time in a Python loop over ``--naive`` images. Each
figure is given as wall-clock images/s (median and best of ``--repeats`` runs) and as images per
CPU-second of this process (median), which does not count time the process spent waiting for a
core on a shared machine; the speed-up is batched render over the naive loop, both in the same
run. Goals (issue 3): ≥ 5,000 traffic images/s at
64 × 64 and ≥ 20,000 digit images/s.

    .venv/bin/python benchmarks/render_throughput.py [--batch 1000] [--repeats 7] [--naive 200] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from simsearch.problems.digits import DigitStrokeSimulator
from simsearch.problems.traffic import REAL_PSI, TrafficSimulator


def _rates(fn, images: int, repeats: int) -> tuple[float, float, float]:
    """Images per second of ``fn`` over ``repeats`` runs after one warm-up: wall-clock median and
    best, and per CPU-second of this process (median; with one torch thread this is the rate of
    one dedicated core, whatever else the machine is running)."""
    fn(0)
    wall, cpu = [], []
    for r in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(r + 1)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return images / statistics.median(wall), images / min(wall), images / statistics.median(cpu)


def _row(name: str, sim, psi, goal: int, args: argparse.Namespace) -> str:
    latents = sim.simulate(psi, args.batch, seed=0).latents
    sim_rate = _rates(lambda r: sim.simulate(psi, args.batch, seed=r), args.batch, args.repeats)
    render_rate = _rates(lambda r: sim.render(latents), args.batch, args.repeats)
    singles = [{k: v[i : i + 1] for k, v in latents.items()} for i in range(args.naive)]

    def naive(r: int) -> None:
        for one in singles:
            sim.render(one)

    naive_rate = _rates(naive, args.naive, max(1, args.repeats // 3))
    return (f"| {name} | {sim_rate[0]:,.0f} / {sim_rate[1]:,.0f} / {sim_rate[2]:,.0f} | "
            f"{render_rate[0]:,.0f} / {render_rate[1]:,.0f} / {render_rate[2]:,.0f} | "
            f"{naive_rate[0]:,.0f} / {naive_rate[2]:,.0f} | {render_rate[0] / naive_rate[0]:.1f}× / "
            f"{render_rate[2] / naive_rate[2]:.1f}× | ≥ {goal:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--naive", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    digits = DigitStrokeSimulator()
    cases = [
        ("traffic 64×64, counts", TrafficSimulator(), REAL_PSI, 5000),
        ("traffic 64×64, mask", TrafficSimulator(label="mask"), REAL_PSI, 5000),
        ("digits 8×8 (drawn at 32×32)", digits, digits.init_psi(), 20000),
    ]
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; load average at start {os.getloadavg()[0]:.1f}; "
          f"batch {args.batch}, {args.repeats} repeats, naive loop over {args.naive} images\n")
    print("| simulator | simulate img/s: wall median / best / per CPU-s | batched render img/s: "
          "wall median / best / per CPU-s | naive per-image loop img/s: wall / per CPU-s | "
          "speed-up render / naive: wall / CPU | goal |")
    print("|---|---|---|---|---|---|")
    for name, sim, psi, goal in cases:
        print(_row(name, sim, psi, goal, args), flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
