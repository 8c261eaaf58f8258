#!/usr/bin/env python
"""MMSegmentation's ANN R101-D8 against segrepro's ANN r101: eval forward, side by side, in one process.

Runs in a separate venv holding MMSegmentation 1.2.2, mmengine and mmcv-lite 2.1 (mmseg 1.2.2 refuses
mmcv ≥ 2.2) next to the same torch as segrepro's, with this checkout's ``src`` on ``PYTHONPATH``
(``segrepro bench models --peer mmseg --peer-python VENV/bin/python`` does that):

    python -m venv /work/mmseg-venv
    /work/mmseg-venv/bin/pip install torch==2.13.0 mmsegmentation==1.2.2 mmengine mmcv-lite==2.1.0 \
        ftfy regex tqdm

mmcv-lite has no compiled ops. ``mmseg.utils`` imports ``mmcv.ops.point_sample`` at import time although
ANN never calls an op of it, so ``mmcv.ops`` is replaced by a stub whose names are empty classes: any
model that really needs a compiled op fails when it is built or run, ANN does not.

Both models: random init (timing does not depend on the values), eval mode, ``no_grad``, batch 1,
the same input (3×512×1024 by default), the same thread count; fp32 on CPU, and with ``--device cuda``
(a CUDA torch in that venv) bf16 autocast with ``channels_last``, as ``segrepro bench models`` measures.
MMSeg's eval forward is ``EncoderDecoder.encode_decode`` (backbone, ANN decode head, bilinear resize to
the input; its FCN auxiliary head is not run in eval); segrepro's is ``main_logits`` (the ``dsn`` head
skipped), or the full forward with ``--segrepro-outputs all`` (the only choice for a checkout older than
``main_logits``).
Repetitions alternate between the models, the order flipping every round, after one untimed warm-up
each that also counts the FLOPs (``torch.utils.flop_counter``, the counter ``segrepro bench models``
uses: conv, matmul, bmm at 2 FLOPs per multiply-add; GMAC = FLOPs / 2). Prints one JSON object with the
median and the fastest run of each: on a shared machine the fastest is the least disturbed by other load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

CONFIG = "ann/ann_r101-d8_4xb2-40k_cityscapes-512x1024.py"


def stub_mmcv_ops() -> None:
    """Make ``import mmcv.ops`` succeed without its compiled extension (see the module docstring)."""
    ops = types.ModuleType("mmcv.ops")

    def missing(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})

    ops.__getattr__ = missing  # type: ignore[method-assign]
    sys.modules["mmcv.ops"] = ops


def mmseg_ann(size: tuple[int, int]) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor], str]:
    """MMSeg's ANN R101-D8 Cityscapes model (SyncBN → BN, no pretrained file) as ``x → logits``."""
    stub_mmcv_ops()
    import mmseg
    from mmengine import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / "configs" / CONFIG))
    bn = {"type": "BN", "requires_grad": True}
    cfg.model.pretrained = None
    for part in ("backbone", "decode_head", "auxiliary_head"):
        cfg.model[part].norm_cfg = bn
    model = MODELS.build(cfg.model).eval()
    metas = [{"img_shape": size, "ori_shape": size, "pad_shape": size}]
    return model, (lambda x: model.encode_decode(x, metas)), f"mmsegmentation {mmseg.__version__}"


def segrepro_ann(outputs: str) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor], str]:
    from segrepro.models import build

    model = build("ann", variant="r101").eval()
    if outputs == "main":
        from segrepro.models.outputs import main_logits

        return model, (lambda x: main_logits(model, x)), "segrepro (main output)"
    return model, (lambda x: model(x).main), "segrepro (all outputs)"


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return names[0] if names else "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="512x1024", help="HxW of the input")
    parser.add_argument("--segrepro-outputs", choices=("main", "all"), default="main")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size {args.size!r}: give HxW, e.g. 512x1024", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.threads < 1:
        print("error: --repeats and --threads must be at least 1", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is visible to this torch", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = dict(mmseg=mmseg_ann((h, w)), segrepro=segrepro_ann(args.segrepro_outputs))
    x = torch.randn(1, 3, h, w)
    if cuda:
        for model, _, _ in models.values():
            model.cuda().to(memory_format=torch.channels_last)
        x = x.cuda().to(memory_format=torch.channels_last)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gmac, times = {}, {name: [] for name in models}
    with torch.no_grad(), precision:
        for name, (_, forward, _) in models.items():
            counter = FlopCounterMode(display=False)
            with counter:
                forward(x)
            gmac[name] = counter.get_total_flops() / 2e9
        for r in range(args.repeats):
            for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
                sync()
                start = time.perf_counter()
                models[name][1](x)
                sync()
                times[name].append(time.perf_counter() - start)
    rows = {}
    for name, (_, _, label) in models.items():
        s, best = statistics.median(times[name]), min(times[name])
        rows[name] = {"label": label, "s": s, "s_min": best, "gmac": gmac[name], "s_per_gmac": s / gmac[name],
                      "s_per_gmac_min": best / gmac[name], "runs_s": times[name]}
    ours, peer = rows["segrepro"], rows["mmseg"]
    report = {
        "machine": cpu_name(), "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads, "input": f"1x3x{h}x{w}", "repeats": args.repeats,
        "device": torch.cuda.get_device_name() + " bf16 channels_last" if cuda else "cpu fp32",
        "load_average_1min": os.getloadavg()[0], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows, "ratio_s": ours["s"] / peer["s"], "ratio_s_per_gmac": ours["s_per_gmac"] / peer["s_per_gmac"],
        "ratio_s_min": ours["s_min"] / peer["s_min"],
        "ratio_s_per_gmac_min": ours["s_per_gmac_min"] / peer["s_per_gmac_min"],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
