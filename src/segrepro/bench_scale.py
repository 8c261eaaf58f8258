"""``segrepro bench scale``: every CPU-side stage timed on a Cityscapes stand-in at a fraction of full size.

Why: the real dataset (2,975 / 500 / 1,525 images of 1024×2048) is far larger than anything the tests
touch; this measures each stage as a user runs it (fresh processes, start-up included, peak RSS of the
process tree) so docs/benchmarks.md's "Cost versus size" table can be rerun on any machine:
synth, prepare (first run and unchanged rerun), DVC (add / status / no-op repro and, with an S3 endpoint,
push / pull), metrics against cityscapesscripts, submission packaging and validation, the training loader
at the official ANN and AlignSeg augmentation, and the MLflow logging of an evaluation plus the leaderboard.
Stages that cannot run here (no S3 server) are reported as skipped with the reason, never guessed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segrepro.errors import UserError

STAGES = ("synth", "prepare", "dvc", "s3", "metrics", "submit", "loader", "mlflow")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segrepro.cli", *args]


def run_measured(argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds and peak RSS (MiB, the largest process of the tree) of one command; raises on failure."""
    # stage commands (dvc.yaml's `segrepro ...`) resolve from this interpreter's environment, activated or not
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**os.environ, "PATH": path, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        raise UserError(f"bench scale: {' '.join(argv[:6])} ... failed ({proc.returncode}): {' | '.join(tail)}")
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "output": out.decode(errors="replace")[-2000:]}


def _row(rows: list[dict], stage: str, figures: dict[str, Any], **extra: Any) -> None:
    rows.append({"stage": stage, **{k: v for k, v in figures.items() if k != "output"}, **extra})
    print(
        f"bench scale: {stage}: "
        + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items() if k != "stage"
        ),
        file=sys.stderr,
    )


def _dvc(work: Path, *args: str) -> dict[str, float]:
    return run_measured([sys.executable, "-m", "dvc", *args], cwd=work)


def bench_dvc(work: Path, rows: list[dict]) -> None:
    """``dvc add`` of the raw stand-in (one directory output, per-file hashing), ``dvc status`` unchanged, a first
    and a no-op ``dvc repro`` of a prepare stage."""
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "config", "user.email", "bench@localhost"], cwd=work, check=True)
    subprocess.run(["git", "config", "user.name", "bench"], cwd=work, check=True)
    _dvc(work, "init", "-q")
    _row(rows, "dvc add (raw data, per-file hashes)", _dvc(work, "add", "-q", "cityscapes"))
    _row(rows, "dvc status (unchanged)", _dvc(work, "status", "-q"))
    (work / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: segrepro data prepare cityscapes --root cityscapes\n"
        "    deps:\n      - cityscapes\n    outs:\n      - cityscapes_prepared\n"
    )
    shutil.rmtree(work / "cityscapes_prepared", ignore_errors=True)
    _row(rows, "dvc repro (prepare, first)", _dvc(work, "repro", "-q"))
    _row(rows, "dvc repro (no-op)", _dvc(work, "repro", "-q"))
    _row(rows, "dvc status (after repro)", _dvc(work, "status", "-q"))


def bench_dvc_remote(work: Path, rows: list[dict], jobs: int, s3: dict[str, str]) -> None:
    """``dvc push`` of the cache to a bucket of the S3 server in ``s3`` (endpoint, keys), then ``dvc pull``."""
    env: dict[str, str] = {k: s3[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in s3}
    bucket = s3.get("BENCH_BUCKET", "segrepro-bench")
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3["S3_ENDPOINT_URL"],
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    _dvc(work, "remote", "add", "-d", "s3", f"s3://{bucket}/cache")
    _dvc(work, "remote", "modify", "s3", "endpointurl", s3["S3_ENDPOINT_URL"])
    _dvc(work, "remote", "modify", "s3", "jobs", str(jobs))
    size = sum(p.stat().st_size for p in (work / ".dvc" / "cache").rglob("*") if p.is_file())
    push = run_measured([sys.executable, "-m", "dvc", "push", "-q"], cwd=work, env=env)
    _row(rows, f"dvc push (jobs={jobs})", push, mb_per_s=size / 2**20 / push["seconds"])
    shutil.rmtree(work / ".dvc" / "cache")
    pull = run_measured([sys.executable, "-m", "dvc", "pull", "-q", "--force"], cwd=work, env=env)
    _row(rows, f"dvc pull (jobs={jobs})", pull, mb_per_s=size / 2**20 / pull["seconds"])


def make_test_predictions(root: Path, dst: Path) -> Path:
    """A valid labelId PNG per test image (evaluated ids only), each source pattern encoded once and copied."""
    import numpy as np
    from PIL import Image

    from segrepro.data.cityscapes import stem_of
    from segrepro.submission.build import prediction_name

    images = sorted((root / "leftImg8bit" / "test").glob("*/*_leftImg8bit.png"))
    with Image.open(images[0]) as im:
        w, h = im.size
    rng = np.random.default_rng(0)
    evaluated = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], dtype=np.uint8)
    dst.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(8):
        grid = evaluated[rng.integers(0, len(evaluated), size=(-(-h // 64), -(-w // 64)))]
        path = dst / f".source{k}.png"
        Image.fromarray(np.kron(grid, np.ones((64, 64), dtype=np.uint8))[:h, :w]).save(path)
        sources.append(path)
    for i, img in enumerate(images):
        shutil.copyfile(sources[i % len(sources)], dst / prediction_name(stem_of(img)))
    for path in sources:
        path.unlink()
    return dst


def bench_loader(root: Path, rows: list[dict], images: int, workers: Sequence[int]) -> None:
    """Training-loader img/s (decode + the official augmentation, batch 1) vs worker count, for ANN and AlignSeg,
    and the workers one GPU at 1 s/iter with batch 1 needs, and what a 16-core 8-GPU node can give it."""
    from segrepro.data import get_dataset
    from segrepro.data.loader import build_loader
    from segrepro.data.transforms import build_train_transforms
    from segrepro.data.validate import default_prepared_dir
    from segrepro.stages import resolved_config

    params = Path(__file__).resolve().parents[2] / "params.yaml"
    for method in ("ann", "alignseg"):
        _, cfg = resolved_config(method, "official", (), params if params.is_file() else Path("params.yaml"))
        crop = cfg.crop_hw
        rates = {}
        for n in workers:
            dataset = get_dataset(
                "cityscapes",
                root,
                "train",
                prepared=default_prepared_dir(root),
                transform=build_train_transforms(cfg.train_augment(), cfg.norm()),
            )
            loader = build_loader(dataset, batch_size=1, train=True, workers=n, seed=0)
            it = iter(loader)
            next(it)  # worker start-up and first decode, untimed
            count, start = 0, time.perf_counter()
            for _ in range(min(images, len(dataset) - 1)):
                next(it)
                count += 1
            rates[n] = count / (time.perf_counter() - start)
            del it, loader
            _row(
                rows,
                f"loader {method} (official augmentation, crop {crop}), workers={n}",
                {"img_per_s": rates[n], "images": count},
            )
        per_worker = rates.get(1, rates[max(rates)])
        rows.append(
            {
                "stage": f"loader {method}: projection",
                "per_worker_img_per_s": per_worker,
                "workers_per_gpu_at_1_s_per_iter_batch_1": math.ceil(1.0 / per_worker),
                "img_per_s_per_gpu_on_16_core_8_gpu_node": 2 * per_worker,
                "loader_bound_on_16_core_8_gpu_node": 2 * per_worker < 1.0,
            }
        )


def bench_mlflow(gt_root: Path, pred_root: Path, work: Path, rows: list[dict]) -> None:
    """The evaluate stage's reporting of a folder evaluation (metrics.json, per-class CSV, plots, MLflow run with
    per-class table) and the leaderboard over it, against a local sqlite store; timed in this process."""
    from segrepro.evaluation.cityscapes_metrics import evaluate_cityscapes_folders
    from segrepro.evaluation.report import cityscapes_report, log_report, write_report
    from segrepro.tracking.mlflow_tracker import MlflowTracker

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    result = evaluate_cityscapes_folders(gt_root, pred_root, progress=False)
    start = time.perf_counter()
    report = cityscapes_report(result)
    run_dir = work / "runs" / "ann"  # a registered method, so the leaderboard finds its paper figure
    files = write_report(report, run_dir / "eval")
    tracker = MlflowTracker(run_name="bench-scale-eval", tags={"stage": "evaluate", "method": "ann"}, params={})
    log_report(tracker, report, files)
    tracker.end("FINISHED")
    logged = time.perf_counter() - start
    (run_dir / "eval" / "eval_summary.json").write_text(json.dumps({"method": "ann", **report.metrics}))
    (run_dir / "config.yaml").write_text("recipe: official\ndataset: cityscapes\nvariant: r101\n")
    lb = run_measured(
        _cli(
            "leaderboard",
            "--runs",
            str(work / "runs"),
            "--out",
            str(work / "leaderboard"),
            "--methods",
            "ann",
            "--params",
            str(work / "none.yaml"),
        ),
        cwd=work,
    )
    _row(rows, f"MLflow logging of a {result.extras['num_images']}-image evaluation (in process)", {"seconds": logged})
    _row(rows, "leaderboard (fresh process, MLflow on)", lb)


def _load_env(path: Path | None) -> dict[str, str] | None:
    """``export K=V`` lines of scripts/s3-server-up.sh's s3.env."""
    if path is None:
        return None
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v.strip("'\"")
    if "S3_ENDPOINT_URL" not in env:
        env["S3_ENDPOINT_URL"] = env.get("AWS_ENDPOINT_URL", env.get("MLFLOW_S3_ENDPOINT_URL", ""))
    return env


def bench_scale(
    work: Path,
    fraction: float,
    size: str = "1024x2048",
    stages: Sequence[str] = STAGES,
    metrics_images: int = 500,
    loader_images: int = 8,
    loader_workers: Sequence[int] = (0, 1, 2),
    dvc_jobs: int = 8,
    s3_env: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the chosen stages in ``work`` (created, and emptied at the end unless ``keep``); returns JSON-able rows."""
    from segrepro.machine import cores, cpu_kind

    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise UserError(f"--stages {','.join(unknown)}: choose among {','.join(STAGES)}")
    work = Path(work).resolve()
    if work.exists() and any(work.iterdir()):
        raise UserError(f"{work}: not empty; bench scale needs an empty or new --work-dir (it deletes it at the end)")
    work.mkdir(parents=True, exist_ok=True)
    root = work / "cityscapes"
    rows: list[dict] = []
    steps: dict[str, Callable[[], None]] = {}
    pairs: dict[str, Path] = {}

    def synth() -> None:
        res = run_measured(
            _cli(
                "data",
                "synth",
                "cityscapes",
                "--profile",
                "full",
                "--fraction",
                str(fraction),
                "--size",
                size,
                "--out",
                str(root),
            )
        )
        files = sum(1 for p in root.rglob("*") if p.is_file())
        _row(
            rows,
            "synth (full profile)",
            res,
            files=files,
            mib=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20,
        )

    def prepare() -> None:
        first = run_measured(_cli("data", "prepare", "cityscapes", "--root", str(root)))
        _row(rows, "prepare (first run)", first)
        second = run_measured(_cli("data", "prepare", "cityscapes", "--root", str(root)))
        _row(rows, "prepare (second run, unchanged)", second, ratio_to_first=second["seconds"] / first["seconds"])

    def metrics() -> None:
        from segrepro.evaluation.bench import bench_eval_folder, replicate_val_pairs

        gt_root, pred_root = replicate_val_pairs(root, work / "pairs", metrics_images)
        pairs.update(gt=gt_root, pred=pred_root)
        f = bench_eval_folder(gt_root, pred_root, work / "pairs")
        rows.append(
            {
                "stage": f"metrics cityscapes, {f['images']} val pairs (fresh process)",
                "seconds": f["ours_s"],
                "official_evaluateImgLists_s": f["official_s"],
                "speedup": f["speedup"],
                "max_abs_difference": f["max_abs_difference"],
            }
        )

    def submit() -> None:
        preds = make_test_predictions(root, work / "test_preds")
        archive = work / "submission.zip"
        pack = run_measured(
            _cli("submit", "package", "--pred", str(preds), "--out", str(archive), "--data", str(root), "--no-mlflow")
        )
        _row(rows, "submit package (test split)", pack, mib=archive.stat().st_size / 2**20)
        _row(
            rows,
            "submit validate (test split)",
            run_measured(_cli("submit", "validate", str(archive), "--data", str(root))),
        )

    def mlflow() -> None:
        if not pairs:
            from segrepro.evaluation.bench import replicate_val_pairs

            pairs["gt"], pairs["pred"] = replicate_val_pairs(root, work / "pairs", metrics_images)
        bench_mlflow(pairs["gt"], pairs["pred"], work, rows)

    steps = {
        "synth": synth,
        "prepare": prepare,
        "dvc": lambda: bench_dvc(work, rows),
        "s3": lambda: bench_dvc_s3(work, rows, dvc_jobs, _load_env(s3_env)),
        "metrics": metrics,
        "submit": submit,
        "loader": lambda: bench_loader(root, rows, loader_images, loader_workers),
        "mlflow": mlflow,
    }
    try:
        for name in STAGES:
            if name in stages:
                steps[name]()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "machine": cpu_kind(),
        "cores": cores(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset: each command's own default"),
        "load_average_1min": os.getloadavg()[0],
        "fraction": fraction,
        "size": size,
        "rows": rows,
    }


def bench_dvc_s3(work: Path, rows: list[dict], jobs: int, s3: dict[str, str] | None) -> None:
    """Push / pull needs the repository of the ``dvc`` stage; alone it is reported as skipped."""
    if not (work / ".dvc").is_dir():
        rows.append({"stage": "dvc push / pull (S3)", "skipped": "needs the dvc stage in the same run"})
        return
    if s3 is None:
        rows.append(
            {
                "stage": "dvc push / pull (S3)",
                "skipped": "no S3 endpoint: pass --s3-env DIR/s3.env written by scripts/s3-server-up.sh",
            }
        )
        return
    bench_dvc_remote(work, rows, jobs, s3)


def markdown(report: dict[str, Any]) -> str:
    """One table row per measured stage (seconds, peak RSS and the stage's own figure)."""
    lines = [
        f"Machine: {report['machine']}, {report['cores']} cores, OMP_NUM_THREADS {report['omp_num_threads']}; load "
        f"average {report['load_average_1min']:.1f} at the end. Fraction {report['fraction']} of full size, "
        f"images {report['size']}.",
        "",
        "| stage | seconds | peak RSS MiB | other |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        other = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k not in ("stage", "seconds", "peak_rss_mib")
        )
        secs = f"{row['seconds']:.2f}" if "seconds" in row else "–"
        rss = f"{row['peak_rss_mib']:.0f}" if "peak_rss_mib" in row else "–"
        lines.append(f"| {row['stage']} | {secs} | {rss} | {other} |")
    return "\n".join(lines)
