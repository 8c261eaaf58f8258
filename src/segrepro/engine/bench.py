"""`segrepro bench train`: seconds per iteration, images/s and peak memory of one training step.

A step is the recipe's real objective (loss terms, optimiser) on random inputs at the recipe's crop and
per-GPU batch, so the figure is the model + loss + optimiser cost without data loading (measured by
`segrepro bench data`). CPU runs use the tiny variant; CUDA runs the official variant in bf16.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from segrepro.engine.objectives import self_supervised, supervised
from segrepro.engine.recipe import Recipe
from segrepro.machine import describe
from segrepro.models import build, get_spec


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_train(
    cfg: Recipe,
    device: str = "cpu",
    iterations: int = 5,
    warmup: int = 2,
    batch: int | None = None,
    crop: int | None = None,
) -> dict[str, Any]:
    """Time ``iterations`` optimiser steps of ``cfg`` (a validated recipe) after ``warmup`` steps."""
    dev = torch.device(device)
    hw = (crop, crop) if crop else cfg.crop_hw
    b = batch or cfg.micro_batch
    torch.manual_seed(0)
    model = build(cfg.method, variant=cfg.variant, num_classes=cfg.model_num_classes()).to(dev).train()
    amp = dev.type == "cuda" and cfg.amp == "bf16"
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
        torch.cuda.reset_peak_memory_stats(dev)
    g = torch.Generator().manual_seed(0)
    if cfg.self_supervised:
        # One global + two local views per image (MultiCrop's defaults), each resized to the crop.
        objective = self_supervised(cfg, model, num_samples=b * iterations)
        sample: dict[str, Any] = {"crops": [torch.randn(b, 3, *hw, generator=g) for _ in range(3)]}
    else:
        objective = supervised(cfg, model, warmup + iterations)
        num_classes = cfg.model_num_classes() or get_spec(cfg.method, cfg.variant).default_num_classes
        sample = {
            "image": torch.randn(b, 3, *hw, generator=g),
            "label": torch.randint(0, num_classes, (b, *hw), generator=g),
        }
    for m in objective.modules:
        m.to(dev)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss, _ = objective.loss(model, sample, dev)
        loss.backward()
        objective.optimizer.step()
        objective.optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_iter = (time.perf_counter() - start) / iterations
    return {
        "method": cfg.method,
        "variant": cfg.variant,
        "recipe": cfg.recipe,
        "device": str(dev),
        "precision": "bf16" if amp else "fp32",
        "batch": b,
        "crop": f"{hw[0]}x{hw[1]}",
        "s_per_iter": per_iter,
        "img_per_s": b / per_iter,
        "peak_memory_mb": _peak_memory_mb(dev),
        "machine": describe(),
    }
