"""Issue 8: how much does the scoring model's training set limit the `digits-rot` Table 1 rows?

``Problem.score`` trains a fresh CNN on 2,000 simulated digits for 6 epochs (120 Adam steps of 100)
and scores it on the real digits. This script scores the same sources with a grid of (samples,
epochs), two scorer seeds each (``seed`` and ``trial_seed(seed, 77)``), and prints the real
*validation* accuracy (test is kept in the JSON, not printed: the script is meant for selection
seeds). Sources (``--tag``): ``ref``, the simulator with its rotation mean set to +90° by hand;
``default``, Meta-Sim with both losses and its default settings (the G_θ of ``run_metasim``,
rescored at every grid point); ``ccapp``, the same with ``--one-hot label --class-mmd --mutable
rotation,shift,width,slant,aspect,scale`` of ``metasim_table1.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metasim_scorer_size.py 3 4 5 6 7 8 --tag ref \
        --out /tmp/i8_p1_ref.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields

import torch

from simsearch import problems
from simsearch.metasim import MetaSimConfig, run_metasim
from simsearch.objective import trial_seed
from simsearch.problems import Problem

GRID = [(2000, 6), (4000, 6), (8000, 6), (16000, 6), (8000, 12)]


def multi(problem, source, seed):
    """Every grid point's val and test, two scorer seeds each."""
    out = {}
    for n, e in GRID:
        for k, s in enumerate((seed, trial_seed(seed, 77))):
            r = Problem.score(problem, source, s, n_samples=n, epochs=e)
            out[f"{n}_{e}_{k}"] = {"val": r["val"], "test": r["test"]}
    return out


class MultiScore(Problem):
    """A problem whose score of a transformed simulator (a data source) also scores the grid."""

    def score(self, source, seed, model=None, n_samples=None, epochs=None, splits=None):
        base = super().score(source, seed, model, n_samples, epochs, splits)
        if callable(source) and not isinstance(source, dict) and n_samples is None and epochs is None:
            base["grid"] = multi(self, source, seed)
        return base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds", type=int, nargs="+")
    ap.add_argument("--tag", choices=["default", "ccapp", "ref"], required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    base = problems.get("digits-rot")
    p = MultiScore(**{f.name: getattr(base, f.name) for f in fields(base)})
    res = {"tag": a.tag, "seeds": a.seeds, "started": time.strftime("%H:%M:%S", time.gmtime()),
           "load": os.getloadavg(), "rows": {}}
    if a.tag == "ref":
        psi = p.simulator.init_psi()
        psi["rotation"] = torch.tensor(90.0)
        for s in a.seeds:
            res["rows"][s] = multi(p, p.psi_source(psi), s)
            print(s, {k: round(v["val"], 3) for k, v in res["rows"][s].items()}, flush=True)
    else:
        cfg = MetaSimConfig()
        if a.tag == "ccapp":
            mut = ("rotation", "shift", "width", "slant", "aspect", "scale")
            cfg = MetaSimConfig(mutable=mut, inputs=(*mut, "label"), one_hot=("label",), class_mmd=True)
        r = run_metasim(p, ["both"], a.seeds, cfg, out=None, jobs=1)
        for run in r["runs"]:
            if run["mode"] == "both":
                res["rows"][run["seed"]] = run["grid"]
                print(run["seed"], {k: round(v["val"], 3) for k, v in run["grid"].items()}, flush=True)
    res["finished"] = time.strftime("%H:%M:%S", time.gmtime())
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
