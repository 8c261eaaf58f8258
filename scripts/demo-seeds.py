#!/usr/bin/env python3
"""Measure the demo's seed spread and write it into README.md (the "Demo results" section).

Trains every supervised method's demo recipe under seeds 0, 1 and 2 (`segrepro train --set
train.<m>.seed=S`), then retrains the first method's seed 0 into a second folder and compares the weights:
that is the bit-for-bit claim, measured on this machine. The README's table sits between the markers
`<!-- seeds:begin -->` and `<!-- seeds:end -->` and names the CPU, ISA and thread count it came from.

With `--from-demo RUNS` (the runs/ folder of a finished `make demo`), seed 0 of every method but the first is
read from RUNS/<m>-demo instead of trained, and the bit-for-bit check compares the first method's seed 0 trained
here with the one `make demo` trained: the demo itself is then what the table's seed-0 column shows.

Usage: scripts/demo-seeds.py [--methods alignseg,acfnet,...] [--seeds 0,1,2] [--out runs/seeds] [--from-demo RUNS]
Needs data/cityscapes and data/cityscapes_prepared (`segrepro synth cityscapes --out data/cityscapes`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from segrepro.engine.distributed import threads_per_process
from segrepro.machine import cores, cpu_kind

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- seeds:begin -->", "<!-- seeds:end -->"


def demo_nproc(method: str) -> int:
    """The DDP process count `make demo` trains the method's demo row with (params.yaml benchmark.<m>-demo.nproc)."""
    import yaml

    rows = yaml.safe_load((ROOT / "params.yaml").read_text())["benchmark"]
    return int(rows[f"{method}-demo"]["nproc"])


def train(method: str, seed: int, out: Path, nproc: int, threads: int) -> None:
    # The same command as dvc.yaml's train stage (--nproc from the benchmark row), one seed changed.
    # PASSIVE: idle OpenMP threads sleep instead of spinning, so other jobs on the machine slow a run
    # by their share of the cores, not by 10x; the arithmetic (and so the weights) is the same.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
           "MLFLOW_TRACKING_URI": f"sqlite:///{out.parent}/mlflow.db"}
    cmd = ["segrepro", "train", "--method", method, "--data", "data/cityscapes", "--out", str(out),
           "--no-resume", "--nproc", str(nproc), "--set", f"train.{method}.seed={seed}"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def weights_digest(run: Path) -> str:
    ckpt = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt)
    h = hashlib.sha256()
    for key in sorted(k for k, v in state.items() if isinstance(v, torch.Tensor)):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="alignseg,acfnet,gald,dgcnet,ann")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "seeds")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--from-demo", type=Path, default=None, help="runs/ of a finished `make demo` (seed 0)")
    args = ap.parse_args()
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]

    first = methods[0]
    nprocs = {m: demo_nproc(m) for m in methods}
    threads = {m: threads_per_process(n) for m, n in nprocs.items()}  # what `segrepro train --nproc` gives each

    def run_dir(m: str, s: int) -> Path:
        if args.from_demo is not None and s == 0 and m != first:
            return args.from_demo / f"{m}-demo"
        return args.out / f"{m}-s{s}"

    missing = [run_dir(m, s) for m in methods for s in seeds if not (run_dir(m, s) / "train_summary.json").exists()]
    for run in missing:  # each run is kept as it finishes: a rerun trains only what is still missing
        if args.from_demo is None or run.parent != args.from_demo:
            method, seed = run.name.rsplit("-s", 1)
            train(method, int(seed), run, nprocs[method], threads[method])
    if args.from_demo is not None:
        again = args.from_demo / f"{first}-demo"
        absent = [str(r) for r in [*missing, again] if r.parent == args.from_demo and not (r / "model.pt").exists()]
        if absent:
            raise SystemExit(f"error: {', '.join(absent)}: no finished run; run `make demo` there first")
        what = f"`make demo` and this script each trained {first} seed {seeds[0]}: they gave "
    else:
        again = args.out / f"{first}-s{seeds[0]}-again"
        train(first, seeds[0], again, nprocs[first], threads[first])
        what = f"{first} seed {seeds[0]} trained twice on this machine gave "
    same = weights_digest(run_dir(first, seeds[0])) == weights_digest(again)

    rows, ok = [], True
    for m in methods:
        scores = [json.loads((run_dir(m, s) / "train_summary.json").read_text())["val_mIoU"] for s in seeds]
        mean, spread = statistics.mean(scores), max(scores) - min(scores)
        passed = min(scores) >= 0.60 and mean >= 0.65
        ok &= passed
        rows.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in scores)
                    + f" | {mean:.3f} | {spread:.3f} | {'yes' if passed else '**no**'} |")
    header = ("| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread (max − min) | target met |\n"
              "|---|" + "---|" * (len(seeds) + 3))
    layouts = sorted({f"{nprocs[m]} process(es) × {threads[m]} torch thread(s)" for m in methods})
    machine = (f"{cpu_kind()}, {cores()} cores, {' / '.join(layouts)} per training, "
               f"torch {torch.__version__}, {datetime.date.today().isoformat()}")
    bits = f"Measured: {what}" + ("bit-identical weights." if same else "**different** weights.")
    block = "\n".join([BEGIN, f"Measured by `scripts/demo-seeds.py` on {machine}.", "", header, *rows, "",
                       bits, END])
    text = args.readme.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        raise SystemExit(f"error: {args.readme}: no {BEGIN} … {END} block to fill")
    tmp = args.readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.readme)
    print(block)
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
