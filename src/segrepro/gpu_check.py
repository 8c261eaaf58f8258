"""``scripts/gpu-check.sh``: everything a lent GPU should prove, in one run of at most 8 minutes.

Checks, each a row per method (or per configuration) in ``gpu-check.json`` / ``gpu-check.md``:

* ``fixtures``: every official configuration against the numeric fixtures on the device, fp32, TF32 off,
  within the README tolerance (:mod:`segrepro.models.fixtures`).
* ``train``: one bf16-autocast forward + backward + optimiser step at the official crop and per-GPU batch
  (params.yaml ``recipes.<method>.official``) with the official loss; s/iter, img/s, peak memory.
* ``ddp``: 20 iterations of DDP (NCCL, SyncBatchNorm; gloo on CPU) over every visible GPU against one
  process with gradient accumulation at the same global batch (see :func:`ddp_worker` for the rule).
* ``eval``: one 2048×1024 image through the official val protocol, then ms-flip (0.5–1.75, flip).
* ``metrics``: the Cityscapes metrics' bincount path on the device equals the fused CPU pass.
* ``channels_last`` / ``compile``: eval speed-up over eager NCHW, or why torch.compile was refused.
* ``roofline``: ANN-R101 single-scale bf16 eval at 1024×2048, FLOPs × img/s against the chip's dense
  bf16 peak (target ≥ 40 %; a miss is a "below target" row, not a failure).

``--cpu-smoke`` runs the same code on CPU with the tiny variants at small sizes (world size 2, gloo) so
the test suite keeps it working without a GPU. Only torch, numpy, numba, pillow and pyyaml are needed
(the GPU image has no pydantic, mlflow, dvc, boto3 or kfp): params.yaml is read with yaml, not through
the recipe schema, and cityscapesscripts comes from ``scripts/gpu-check-wheels``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from segrepro.data.transforms import IGNORE_INDEX
from segrepro.engine.config import (
    LOSS_TERM_WEIGHT,
    OHEM_DEFAULTS,
    PAPER_GPUS,
    merge_chain,
    micro_batch,
    optimizer_defaults,
)
from segrepro.errors import UserError
from segrepro.machine import cpu_kind, describe
from segrepro.models.card import Protocol
from segrepro.models.fixtures import CASES, check_case, fixture_files
from segrepro.models.registry import build, get_card, list_methods

REPO = Path(__file__).resolve().parents[2]
BUDGET_S = 480.0
MEMORY_GB = 80.0  # headroom is reported against an 80 GB card, the largest the recipes assume
ROOFLINE_TARGET = 0.40
# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS, by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),  # GH200 matches "H200"
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)
DDP_ITERS = 20
DDP_LOSS_RTOL = 1e-2  # every iteration's loss, relative (rounding grows over 20 steps, see ddp_worker)
DDP_STEP_RTOL = 1e-3  # ‖θ_ddp − θ_one‖ / ‖θ_one − θ_0‖ after the first step
SMOKE_FIXTURES = {"dgcnet-r50", "alignseg_ssl-voc"}  # one CNN (layer3 hook path) and the ViT, ~10 s on CPU
SMOKE_COMPILE = "dgcnet"  # dynamo tracing costs seconds per model on CPU: the smoke run traces one
EVAL_SIZE = (1024, 2048)


@dataclass
class Row:
    check: str
    method: str
    config: str
    status: str  # pass | fail | skip | below target
    metrics: dict[str, float | str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    device: torch.device
    smoke: bool
    fixtures: Path | None
    params: dict[str, Any]
    budget_s: float
    t0: float = field(default_factory=time.perf_counter)
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(
            f"[{time.perf_counter() - self.t0:6.1f}s] {row.check:13s} {row.method:13s} {row.config:34s} {row.status}"
            f" {row.note}",
            flush=True,
        )
        return row

    @property
    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)


# ---------------------------------------------------------------------------------------------- helpers


def _error(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


@contextlib.contextmanager
def _guard(ctx: Context, check: str, method: str, config: str) -> Iterator[None]:
    """A failing configuration becomes a ``fail`` row and the run goes on with the next one."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the run
        ctx.add(check, method, config, "fail", note=_error(err))
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | str:
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else "n/a"


def _autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Mean seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _fp32_exact() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def official_recipe(params: dict[str, Any], method: str) -> dict[str, Any]:
    """``recipes.<method>.official`` as training resolves it, without the schema (pydantic is not on the GPU
    image): its ``extends`` chain, the card's defaults and the optimiser, loss and batch defaults of
    :mod:`segrepro.engine.config`. A test holds it equal to :func:`segrepro.engine.recipe.resolve`."""
    raw = merge_chain((params.get("recipes") or {}).get(method) or {}, method, "official")
    for key, value in get_card(method).recipe_defaults().items():
        raw.setdefault(key, value)
    crop = raw["crop"]
    raw["crop_hw"] = (crop, crop) if isinstance(crop, int) else tuple(crop)
    raw["optimizer"] = optimizer_defaults(raw["optimizer"], str(raw["objective"]))
    if raw.get("loss"):
        loss = raw["loss"]
        terms = [{"weight": LOSS_TERM_WEIGHT, **t} for t in loss["terms"]]
        raw["loss"] = {**loss, "terms": terms, "ohem": {**OHEM_DEFAULTS, **(loss.get("ohem") or {})}}
    raw.setdefault("ignore_index", IGNORE_INDEX)
    raw["micro_batch"] = micro_batch(raw["batch_size"], raw.get("gpus", PAPER_GPUS), raw.get("per_gpu_batch"))
    raw["method"] = method
    return raw


@dataclass(frozen=True)
class OptimizerKeys:
    """The optimiser keys training reads (:class:`segrepro.engine.schedule.OptimizerSettings`)."""

    name: str
    lr: float
    weight_decay: float
    momentum: float | None
    nesterov: bool | None
    head_lr_mult: float


def _optimizer(recipe: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser training builds (:mod:`segrepro.engine.objectives`): the model's own parameter groups
    for the self-supervised objective, else the card's head split."""
    from segrepro.engine.schedule import build_optimizer, make_optimizer

    opt = recipe["optimizer"]
    cfg = OptimizerKeys(**{f.name: opt.get(f.name) for f in fields(OptimizerKeys)})
    if _is_ssl(recipe["method"]):
        return make_optimizer(model.param_groups(cfg.weight_decay), cfg)  # type: ignore[operator]
    return build_optimizer(model, cfg, get_card(recipe["method"]).head_prefixes)


def _criterion(recipe: dict[str, Any], ce_only: bool = False) -> Callable[[Any, Tensor], Tensor]:
    """The recipe's loss terms (``ce_only``: the same outputs with plain CE, a per-pixel mean that does not
    depend on how a batch is split, for the DDP comparison), built as training builds them."""
    from segrepro.engine.losses import build_criterion

    loss = recipe["loss"]
    if ce_only:
        loss = {**loss, "terms": [{**t, "loss": "ce"} for t in loss["terms"]], "class_weights": None}
    crit = build_criterion(loss, recipe["ignore_index"])
    return lambda out, target: crit.to(target.device)(out, target)[0]


def _ssl_loss(out: Any, _target: Tensor) -> Tensor:
    from segrepro.engine.ssl_loss import alignseg_ssl_loss

    return alignseg_ssl_loss(out)["loss"]


def _is_ssl(method: str) -> bool:
    return get_card(method).objective == "self_supervised"


def synthetic_batch(method: str, first: int, n: int, hw: tuple[int, int], device: torch.device) -> tuple[Any, Tensor]:
    """Samples ``first .. first+n-1``, each a pure function of its index: (input, labels). The SSL input is
    the multi-crop list [global, local, local]; supervised labels are 0..18 everywhere (no ignored pixel,
    so a batch's mean loss is the mean of its halves' means)."""
    crops = 3 if _is_ssl(method) else 1
    xs, ys = [], []
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(i)
        xs.append(torch.randn(crops, 3, *hw, generator=g))
        ys.append(torch.randint(0, 19, hw, generator=g))
    x = torch.stack(xs, 1).to(device)  # (crops, n, 3, h, w)
    y = torch.stack(ys).to(device)
    return ([c for c in x] if crops > 1 else x[0]), y


def _channels_last(x: Any) -> Any:
    """A model, an input or a multi-crop list in channels_last."""
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    if isinstance(x, list):
        return [_channels_last(c) for c in x]
    return x.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------- checks


def check_fixtures(ctx: Context) -> None:
    methods = {c.method for c in CASES}
    if ctx.fixtures is None:
        for m in sorted(methods):
            ctx.add(
                "fixtures",
                m,
                "all",
                "skip",
                note="no fixtures folder (tests/fixtures/reference, ../shared/reference/fixtures or --fixtures)",
            )
        return
    _fp32_exact()
    for case in CASES:
        key = f"{case.method}-{case.name}"
        if ctx.smoke and key not in SMOKE_FIXTURES:
            ctx.add(
                "fixtures",
                case.method,
                case.name,
                "skip",
                note="cpu smoke checks one CNN and one ViT case (the rest cost ~1 min on CPU; "
                "tests/test_model_*.py run them all)",
            )
            continue
        with _guard(ctx, "fixtures", case.method, case.name):
            start = time.perf_counter()
            res = check_case(case, ctx.fixtures, ctx.device)
            ok = all(good for _, good in res.values())
            metrics: dict[str, float | str] = {f"err_{k}": float(f"{e:.3g}") for k, (e, _) in res.items()}
            metrics["s"] = round(time.perf_counter() - start, 1)
            ctx.add(
                "fixtures",
                case.method,
                case.name,
                "pass" if ok else "fail",
                metrics,
                "max|Δ|/max|ref| per output; tolerance 1e-5·|ref| + 2e-5·max|ref|",
            )


def check_train(ctx: Context) -> None:
    torch.backends.cudnn.benchmark = True
    for method in list_methods():
        recipe = official_recipe(ctx.params, method)
        hw = (64, 64) if ctx.smoke else recipe["crop_hw"]
        batch = 2 if ctx.smoke else recipe["micro_batch"]  # tiny models pool to 1×1: BN needs 2 images
        variant = "tiny" if ctx.smoke else recipe["variant"]
        config = f"{variant} {hw[0]}×{hw[1]} ×{batch} bf16"
        with _guard(ctx, "train", method, config):
            _train_row(ctx, method, recipe, variant, hw, batch, config)


def _train_row(
    ctx: Context, method: str, recipe: dict[str, Any], variant: str, hw: tuple[int, int], batch: int, config: str
) -> None:
    torch.manual_seed(0)
    model = _channels_last(build(method, variant=variant).to(ctx.device)).train()
    loss_fn = _ssl_loss if _is_ssl(method) else _criterion(recipe)
    opt = _optimizer(recipe, model)
    x, y = synthetic_batch(method, 0, batch, hw, ctx.device)
    x = _channels_last(x)
    losses: list[float] = []

    def step() -> None:
        with _autocast(ctx.device):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    _reset_peak(ctx.device)
    sec = _seconds(step, ctx.device, repeats=1 if ctx.smoke else 3, warmup=1 if ctx.smoke else 2)
    finite = all(math.isfinite(v) for v in losses)
    ctx.add(
        "train",
        method,
        config,
        "pass" if finite else "fail",
        {
            "s_per_iter": round(sec, 4),
            "img_s": round(batch / sec, 2),
            "peak_gb": _peak_gb(ctx.device),
            "loss": round(losses[-1], 4),
        },
        "" if finite else f"loss not finite: {losses}",
    )


def check_ddp(ctx: Context) -> None:
    world = 2 if ctx.smoke else max(torch.cuda.device_count(), 1)
    spec = {"smoke": ctx.smoke, "params": ctx.params, "methods": list_methods()}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec["result"] = str(result_path)
        spec_path.write_text(json.dumps(spec))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(world),
            "-m",
            "segrepro.gpu_check",
            "--ddp-worker",
            str(spec_path),
        ]
        start = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(ctx.left_s, 120))
            rc, tail = res.returncode, (res.stderr or res.stdout).strip().splitlines()[-3:]
        except subprocess.TimeoutExpired as err:
            rc, tail = -1, [f"timed out after {err.timeout:.0f} s"]
        wall = round(time.perf_counter() - start, 1)
        if rc != 0 or not result_path.is_file():
            for method in list_methods():
                ctx.add("ddp", method, f"world {world}", "fail", note=f"torchrun exit {rc}: {' | '.join(tail)}"[:300])
            return
        results = json.loads(result_path.read_text())
    for r in results:
        if "error" in r:
            ctx.add("ddp", r["method"], r.get("config", f"world {world}"), "fail", note=r["error"])
            continue
        ok = r["loss_rel"] <= DDP_LOSS_RTOL and r["step_rel"] <= DDP_STEP_RTOL
        ctx.add(
            "ddp",
            r["method"],
            r["config"],
            "pass" if ok else "fail",
            {
                "loss_rel": float(f"{r['loss_rel']:.3g}"),
                "step_rel": float(f"{r['step_rel']:.3g}"),
                "first_loss": round(r["first_loss"], 4),
                "last_loss": round(r["last_loss"], 4),
                "torchrun_s": wall,
            },
            f"{r['backend']}, {r['norm']}; {DDP_ITERS} its, tolerance: losses {DDP_LOSS_RTOL:g} rel., "
            f"step 1 ‖θ_ddp−θ_one‖/‖θ_one−θ0‖ ≤ {DDP_STEP_RTOL:g}",
        )


def _no_dropout(model: nn.Module) -> None:
    """Dropout masks depend on how a batch is split, so both runs train without them."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])


def _steps(
    net: nn.Module,
    model: nn.Module,
    method: str,
    recipe: dict[str, Any],
    hw: tuple[int, int],
    micro: int,
    accum: int,
    rank: int,
    world: int,
    device: torch.device,
) -> tuple[list[float], Tensor]:
    """(losses, parameters after the first step) of ``DDP_ITERS`` iterations. Rank ``r``'s micro-batch ``a``
    of iteration ``it`` holds samples from ``((it·accum + a)·world + r)·micro``, so each iteration covers
    the same global batch for any layout."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from segrepro.engine.distributed import all_reduce_sum

    loss_fn = _ssl_loss if _is_ssl(method) else _criterion(recipe, ce_only=True)
    opt = _optimizer(recipe, model)
    losses = []
    for it in range(DDP_ITERS):
        total = torch.zeros(1, device=device)
        for a in range(accum):
            x, y = synthetic_batch(method, ((it * accum + a) * world + rank) * micro, micro, hw, device)
            last = a == accum - 1 or not isinstance(net, DDP)
            with contextlib.nullcontext() if last else cast(DDP, net).no_sync():
                loss = loss_fn(net(x), y)
                (loss / accum).backward()
            total += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(all_reduce_sum(total) if isinstance(net, DDP) else total) / (accum * world))
        if it == 0:
            first = _flat(model)
    return losses, first


def ddp_worker(spec_path: Path) -> None:
    """One torchrun rank. For each method: a DDP run (SyncBatchNorm on CUDA), then on rank 0 the
    one-process run with gradient accumulation over the same global batch.

    Equivalence rule: per-rank statistics (gloo on CPU: ``convert_sync_norm`` leaves a CPU model alone)
    equal one process with the same micro-batch and ``world``× the accumulation steps. Synchronised
    statistics equal one process whose micro-batch is the union of the ranks' (``world``× larger). Losses
    are plain per-pixel-mean CE (OHEM and Lovász depend on the split), dropout is off, fp32 with TF32 off.
    The weights are compared after the first step (a sampling, scaling or statistics error moves them by
    O(1) of the update): through BatchNorm on 1×1 pooled maps of two images, rounding differences grow
    ~100× per step, so after 20 steps only the loss curves are comparable.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from segrepro.engine.distributed import barrier, cleanup
    from segrepro.models.norm import InPlaceABN, convert_sync_norm

    spec = json.loads(spec_path.read_text())
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = torch.cuda.is_available() and not spec["smoke"]
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    _fp32_exact()
    dist.init_process_group("nccl" if cuda else "gloo")
    results = []
    for method in spec["methods"]:
        recipe = official_recipe(spec["params"], method)
        variant = "tiny" if spec["smoke"] else ("train_voc" if _is_ssl(method) else recipe["variant"])
        hw = (64, 64) if spec["smoke"] else ((224, 224) if _is_ssl(method) else (257, 257))
        micro, accum = 2, 1 if spec["smoke"] else 2  # the one-process run accumulates world × accum steps
        config = f"{variant} {hw[0]}², world {world} × micro {micro} × accum {accum}"
        try:
            torch.manual_seed(0)
            model = build(method, variant=variant).to(device)
            start = _flat(model)
            has_bn = any(isinstance(m, (nn.modules.batchnorm._BatchNorm, InPlaceABN)) for m in model.modules())
            synced = cuda and world > 1 and has_bn
            model = convert_sync_norm(model)
            net = DDP(model, device_ids=[local] if cuda else None, find_unused_parameters=True)
            net.train()
            _no_dropout(net)
            ddp_losses, ddp_first = _steps(net, model, method, recipe, hw, micro, accum, rank, world, device)
            del net, model
            if rank == 0:
                torch.manual_seed(0)
                one = build(method, variant=variant).to(device).train()
                _no_dropout(one)
                one_micro = micro * world if synced else micro
                one_accum = micro * accum * world // one_micro
                one_losses, one_first = _steps(one, one, method, recipe, hw, one_micro, one_accum, 0, 1, device)
                delta = (ddp_first - one_first).norm() / (one_first - start).norm().clamp_min(1e-12)
                results.append(
                    {
                        "method": method,
                        "config": config,
                        "backend": dist.get_backend(),
                        "norm": "SyncBatchNorm" if synced else ("per-rank BN" if has_bn else "no BN"),
                        "loss_rel": max(
                            abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ddp_losses, one_losses, strict=True)
                        ),
                        "step_rel": float(delta),
                        "first_loss": one_losses[0],
                        "last_loss": one_losses[-1],
                    }
                )
                del one
        except Exception as err:  # noqa: BLE001 - reported as this method's row
            results.append({"method": method, "config": config, "error": _error(err)})
        barrier()
    if rank == 0:
        Path(spec["result"]).write_text(json.dumps(results))
    cleanup()


def _eval_variant(ctx: Context, method: str, recipe: dict[str, Any]) -> str:
    if ctx.smoke:
        return "tiny"
    return "voc" if _is_ssl(method) else recipe["variant"]


def check_eval(ctx: Context) -> None:
    from segrepro.evaluation.inference import resolve_protocol

    torch.backends.cudnn.benchmark = True
    for method in list_methods():
        card = get_card(method)
        variant = _eval_variant(ctx, method, official_recipe(ctx.params, method))
        size = card.eval_size or EVAL_SIZE
        if ctx.smoke:
            size = (64, 64) if card.eval_size else (128, 256)
        model = None
        for name in ("official", "ms-flip"):
            proto = resolve_protocol(card.eval_protocols, name)
            if ctx.smoke and proto.crop:  # keep the sliding window at the small size
                proto = replace(proto, crop=96, stride=None)
            config = f"{variant} {size[0]}×{size[1]} {proto.describe()}"
            with _guard(ctx, "eval", method, config):
                if model is None:
                    torch.manual_seed(0)
                    model = _channels_last(build(method, variant=variant).eval().to(ctx.device))
                _eval_row(ctx, method, config, model, proto, size)
        del model


def _eval_row(ctx: Context, method: str, config: str, model: nn.Module, proto: Protocol, size: tuple[int, int]) -> None:
    from segrepro.evaluation.inference import predict_probs

    image = torch.randn(3, *size, device=ctx.device)
    _reset_peak(ctx.device)
    sec = _seconds(lambda: predict_probs(model, image, proto), ctx.device, repeats=1)
    peak = _peak_gb(ctx.device)
    fits = not isinstance(peak, float) or peak < MEMORY_GB
    metrics: dict[str, float | str] = {"s_per_img": round(sec, 3), "img_s": round(1 / sec, 3), "peak_gb": peak}
    if isinstance(peak, float):
        metrics["headroom_gb"] = round(MEMORY_GB - peak, 1)
    ctx.add(
        "eval",
        method,
        config,
        "pass" if fits else "fail",
        metrics,
        "" if fits else f"peak memory above {MEMORY_GB:g} GB",
    )


def check_metrics(ctx: Context) -> None:
    """Random labelIds with instances; the device bincount path's state equals the fused CPU pass's."""
    from segrepro.evaluation.cityscapes_metrics import CityscapesEvaluator

    size = (128, 256) if ctx.smoke else EVAL_SIZE
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 34, (2, *size), generator=g, dtype=torch.uint8)
    gt = torch.randint(0, 34, (2, *size), generator=g, dtype=torch.uint8)
    inst = torch.where(gt.long() >= 24, gt.long() * 1000 + torch.randint(0, 5, gt.shape, generator=g), gt.long())
    config = f"2 images {size[0]}×{size[1]}, {ctx.device.type} bincount vs CPU numba"
    with _guard(ctx, "metrics", "-", config):
        cpu = CityscapesEvaluator("cpu")
        dev = CityscapesEvaluator(ctx.device, fused=False)
        cpu.update(pred.numpy(), gt.numpy(), inst.numpy())
        start = time.perf_counter()
        dev.update(pred.to(ctx.device), gt.to(ctx.device), inst.to(ctx.device))
        _sync(ctx.device)
        sec = time.perf_counter() - start
        same = all(np.array_equal(cpu.state[k].cpu().numpy(), dev.state[k].cpu().numpy()) for k in cpu.state)
        a, b = (e.compute().average_scores for e in (cpu, dev))
        same = same and all(a[k] == b[k] or math.isnan(a[k]) and math.isnan(b[k]) for k in a)
        ctx.add(
            "metrics",
            "-",
            config,
            "pass" if same else "fail",
            {
                "IoU_classes": round(a["averageScoreClasses"], 6),
                "iIoU_classes": round(a["averageScoreInstClasses"], 6),
                "device_s": round(sec, 4),
            },
            "" if same else "accumulated states or scores differ",
        )


def check_options(ctx: Context) -> None:
    """Eval forward at the train crop, bf16 on CUDA: channels_last and torch.compile against eager NCHW."""
    for method in list_methods():
        recipe = official_recipe(ctx.params, method)
        variant = _eval_variant(ctx, method, recipe)
        hw = (64, 64) if ctx.smoke else recipe["crop_hw"]
        repeats = 2 if ctx.smoke else 10
        config = f"{variant} {hw[0]}×{hw[1]} ×1"
        measured: dict[str, Any] = {}
        with _guard(ctx, "channels_last", method, config):
            torch.manual_seed(0)
            model = build(method, variant=variant).eval().to(ctx.device)
            x = torch.randn(1, 3, *hw, device=ctx.device)
            eager = _seconds(_forward(ctx, model, x), ctx.device, repeats)
            model = _channels_last(model)
            xc = x.contiguous(memory_format=torch.channels_last)
            cl = _seconds(_forward(ctx, model, xc), ctx.device, repeats)
            ctx.add(
                "channels_last",
                method,
                config,
                "pass",
                {"eager_ms": round(eager * 1e3, 2), "ms": round(cl * 1e3, 2), "speedup": round(eager / cl, 3)},
            )
            measured.update(model=model, x=xc, eager=eager)
        if not measured:
            ctx.add("compile", method, config, "skip", note="channels_last run failed")
            continue
        _check_compile(ctx, method, config, measured["model"], measured["x"], measured["eager"], repeats)
        measured.clear()


def _forward(ctx: Context, model: Callable[[Tensor], Any], x: Tensor) -> Callable[[], Any]:
    """An eval forward without grad, bf16 autocast on CUDA (fp32 on CPU, where bf16 is emulated)."""

    def run() -> Any:
        with torch.no_grad(), _autocast(ctx.device, ctx.device.type == "cuda"):
            return model(x)

    return run


def _check_compile(
    ctx: Context, method: str, config: str, model: nn.Module, x: Tensor, eager: float, repeats: int
) -> None:
    """torch.compile (inductor on CUDA; the ``eager`` backend on CPU, which checks graph capture without a
    C++ toolchain) where the time budget allows; a refusal is a ``skip`` row saying why."""
    backend = "eager" if ctx.smoke else "inductor"
    if ctx.smoke and method != SMOKE_COMPILE:
        ctx.add("compile", method, config, "skip", note=f"cpu smoke traces one method ({SMOKE_COMPILE})")
        return
    if not ctx.smoke and ctx.left_s < 150:
        ctx.add("compile", method, config, "skip", note=f"time budget: {ctx.left_s:.0f} s left")
        return
    try:
        compiled = torch.compile(model, backend=backend)
        start = time.perf_counter()
        _forward(ctx, compiled, x)()
        _sync(ctx.device)
        first = time.perf_counter() - start
        sec = _seconds(_forward(ctx, compiled, x), ctx.device, repeats)
    except Exception as err:  # noqa: BLE001 - "why refused" is the row
        ctx.add("compile", method, config, "skip", note=f"refused ({backend}): {_error(err)}")
        return
    finally:
        torch._dynamo.reset()
    ctx.add(
        "compile",
        method,
        config,
        "pass",
        {
            "backend": backend,
            "compile_s": round(first, 1),
            "ms": round(sec * 1e3, 2),
            "speedup_vs_eager": round(eager / sec, 3),
        },
    )


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its torch name, ``None`` when not in :data:`PEAK_BF16_TFLOPS`."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def check_roofline(ctx: Context) -> None:
    from segrepro.models.bench import count_flops

    variant = "tiny" if ctx.smoke else "r101"
    size = (128, 256) if ctx.smoke else EVAL_SIZE
    config = f"ann {variant} {size[0]}×{size[1]} ss bf16 ×1"
    with _guard(ctx, "roofline", "ann", config):
        flops = count_flops("ann", variant, size)
        torch.manual_seed(0)
        model = _channels_last(build("ann", variant=variant).eval().to(ctx.device))
        x = torch.randn(1, 3, *size, device=ctx.device).contiguous(memory_format=torch.channels_last)

        def run() -> None:
            with torch.no_grad(), _autocast(ctx.device):
                model(x)

        sec = _seconds(run, ctx.device, repeats=2 if ctx.smoke else 10, warmup=1 if ctx.smoke else 3)
        achieved = flops / sec / 1e12
        metrics: dict[str, float | str] = {
            "gflop_per_img": round(flops / 1e9, 1),
            "img_s": round(1 / sec, 3),
            "achieved_tflops": round(achieved, 3),
        }
        gpu = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else cpu_kind()
        peak = peak_tflops(gpu) if ctx.device.type == "cuda" else None
        if peak is None:
            ctx.add("roofline", "ann", config, "skip", metrics, f"no dense bf16 peak known for {gpu}")
            return
        frac = achieved / peak
        metrics.update(peak_tflops=peak, fraction=round(frac, 3))
        ctx.add(
            "roofline",
            "ann",
            config,
            "pass" if frac >= ROOFLINE_TARGET else "below target",
            metrics,
            f"target ≥ {ROOFLINE_TARGET:.0%} of {peak:g} TFLOPS",
        )


CHECKS: tuple[tuple[str, Callable[[Context], None]], ...] = (
    ("fixtures", check_fixtures),
    ("train", check_train),
    ("ddp", check_ddp),
    ("eval", check_eval),
    ("metrics", check_metrics),
    ("options", check_options),
    ("roofline", check_roofline),
)
CHECK_NAMES = ("fixtures", "train", "ddp", "eval", "metrics", "channels_last", "compile", "roofline")

# ----------------------------------------------------------------------------------------------- report


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, CPU, threads, driver, torch/CUDA/cuDNN versions and the GPUs."""
    env: dict[str, Any] = {
        "machine": describe(),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "threads": torch.get_num_threads(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1)
        env["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).split("\n")[0]
    return env


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    title = "CPU smoke (tiny variants, small sizes; not a GPU result)" if report["smoke"] else "GPU check"
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {_cell(v)}" for k, v in env.items()]
    lines += [
        f"- total: {report['seconds']:.0f} s (budget {report['budget_s']:.0f} s)",
        f"- result: **{'PASS' if report['ok'] else 'FAIL'}** "
        f"({', '.join(f'{k} {v}' for k, v in report['counts'].items())})",
        "",
    ]
    lines += ["| check | method | configuration | status | measurements | note |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        figures = ", ".join(f"{k} {v}" for k, v in r["metrics"].items())
        lines.append(
            f"| {r['check']} | {r['method']} | {_cell(r['config'])} | {r['status']} | {_cell(figures)} | "
            f"{_cell(r['note'])} |"
        )
    return "\n".join(lines) + "\n"


def find_fixtures(explicit: Path | None) -> Path | None:
    """``--fixtures``, else the in-tree copy (tests/fixtures/reference), else ../shared/reference/fixtures;
    a folder counts only when it holds every file the cases read."""
    candidates = (
        [explicit]
        if explicit
        else [
            REPO / "tests" / "fixtures" / "reference",
            Path(os.environ.get("SEGREPRO_REFERENCE", REPO.parent / "shared" / "reference")) / "fixtures",
        ]
    )
    for c in candidates:
        if c and all((c / f).is_file() for f in fixture_files()):
            return c
    if explicit:
        raise UserError(f"--fixtures {explicit}: missing fixture files (need {', '.join(fixture_files()[:3])}, ...)")
    return None


def run_checks(
    out: Path,
    smoke: bool,
    fixtures: Path | None = None,
    budget_s: float = BUDGET_S,
    params: Path = REPO / "params.yaml",
) -> dict[str, Any]:
    if not smoke and not torch.cuda.is_available():
        raise UserError("no CUDA device visible; run with --cpu-smoke for the CPU variant")
    if not params.is_file():
        raise UserError(f"--params {params}: no such file")
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    ctx = Context(device, smoke, find_fixtures(fixtures), yaml.safe_load(params.read_text()), budget_s)
    for name, check in CHECKS:
        with _guard(ctx, name, "-", "the check itself"):  # what a check does not catch per row stops only it
            check(ctx)
    seconds = time.perf_counter() - ctx.t0
    in_budget = seconds <= budget_s
    ctx.add("budget", "-", f"total ≤ {budget_s:.0f} s", "pass" if in_budget else "fail", {"s": round(seconds, 1)})
    counts: dict[str, int] = {}
    for r in ctx.rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    report = {
        "smoke": smoke,
        "ok": counts.get("fail", 0) == 0,
        "seconds": seconds,
        "budget_s": budget_s,
        "counts": counts,
        "environment": environment(device),
        "rows": [asdict(r) for r in ctx.rows],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu-check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check.sh", description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("gpu-check"), help="report folder")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny variants at small sizes on CPU")
    parser.add_argument("--fixtures", type=Path, help="the numeric fixtures folder (default: the in-tree copy)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds the whole run may take")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.ddp_worker:
            ddp_worker(args.ddp_worker)
            return 0
        report = run_checks(args.out, args.cpu_smoke, args.fixtures, args.budget, args.params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'PASS' if report['ok'] else 'FAIL'}: {args.out / 'gpu-check.md'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
