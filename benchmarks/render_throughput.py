"""Rendering throughput of the vision simulators: batched vs a naive per-image loop (issue 3).

For each simulator, a batch of ``--batch`` (1,000) latents is drawn once; then, timed in the same
run: ``simulate(ψ, batch)`` (sampling + rendering), ``render(latents)`` of the whole batch, and the
same ``render`` called on one image at a time in a Python loop over ``--naive`` images. Each
figure is given as wall-clock images/s (median and best of ``--repeats`` runs) and as images per
CPU-second of this process (median), which does not count time the process spent waiting for a
core on a shared machine; the speed-up is batched render over the naive loop, both in the same
run. The whole table is measured once per torch thread setting of ``--threads`` (default: one
thread, then torch's default at start — run without ``OMP_NUM_THREADS`` for that), with the
machine's ``uptime`` before and after. ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's switch for
transparent huge pages in its CPU allocator) makes the kernel fault in a fresh output batch in
2 MB pages instead of 4 kB ones; the header says whether it was set. Goals (issue 3):
≥ 5,000 traffic images/s at 64 × 64 and ≥ 20,000 digit images/s.

    .venv/bin/python benchmarks/render_throughput.py [--batch 1000] [--repeats 7] [--naive 200]
        [--threads 1,2] [--only traffic|digits]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
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
    parser.add_argument("--threads", default=None,
                        help="comma-separated torch thread counts (default: 1 and torch's default)")
    parser.add_argument("--only", choices=("traffic", "digits"), default=None,
                        help="measure one simulator only (default: both)")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    settings = [int(t) for t in (args.threads or f"1,{default_threads}").split(",")]
    digits = DigitStrokeSimulator()
    cases = [
        ("traffic 64×64, counts", TrafficSimulator(), REAL_PSI, 5000),
        ("traffic 64×64, mask", TrafficSimulator(label="mask"), REAL_PSI, 5000),
        ("digits 8×8 (drawn at 32×32)", digits, digits.init_psi(), 20000),
    ]
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} (default "
          f"{default_threads} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}); "
          f"batch {args.batch}, {args.repeats} repeats, naive loop over {args.naive} images")
    for threads in settings:
        torch.set_num_threads(threads)
        print(f"\n{threads} torch thread(s); uptime: {_uptime()}\n")
        print("| simulator | simulate img/s: wall median / best / per CPU-s | batched render img/s: "
              "wall median / best / per CPU-s | naive per-image loop img/s: wall / per CPU-s | "
              "speed-up render / naive: wall / CPU | goal |")
        print("|---|---|---|---|---|---|")
        for name, sim, psi, goal in cases:
            if args.only and not name.startswith(args.only):
                continue
            print(_row(name, sim, psi, goal, args), flush=True)
    print(f"\nuptime at end: {_uptime()}")


def _uptime() -> str:
    """The machine's ``uptime`` line (users and load averages), or the load averages alone."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
