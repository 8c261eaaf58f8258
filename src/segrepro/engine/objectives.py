"""Objectives: how a micro-batch becomes a loss, and how the optimiser and lr evolve.

The supervised methods share one objective (SGD, poly lr, the recipe's loss terms on image/label);
the self-supervised AlignSeg has its own (AdamW groups, step decay per epoch, multi-crop loss). The
training loop only sees an :class:`Objective`, so both run through the same resumable, DDP-aware loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from segrepro.engine.losses import build_criterion
from segrepro.engine.schedule import build_optimizer, set_lr
from segrepro.errors import UserError

LossFn = Callable[[nn.Module, Mapping[str, Any], torch.device], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class Objective:
    optimizer: torch.optim.Optimizer
    set_lr: Callable[[int], float]  # sets every group's lr for an iteration; returns the base lr
    loss: LossFn
    modules: tuple[nn.Module, ...] = ()  # extra modules to move to the device (e.g. the criterion)


def supervised(cfg: Mapping[str, Any], model: nn.Module, head_prefixes: tuple[str, ...] = ()) -> Objective:
    opt_cfg = cfg["optimizer"]
    optimizer = build_optimizer(model, opt_cfg, head_prefixes)
    criterion = build_criterion(cfg["loss"])
    iters, base, power = int(cfg["iterations"]), float(opt_cfg["lr"]), float(opt_cfg.get("poly_power", 0.9))

    def loss(net: nn.Module, batch: Mapping[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        image = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        label = batch["label"].to(device, non_blocking=True).long()
        try:
            out = net(image)
        except ValueError as err:  # train-mode BatchNorm after global pooling needs 2+ values per channel
            if "Expected more than 1 value per channel" not in str(err):
                raise
            method = cfg.get("method", "<method>")
            raise UserError(f"a micro-batch of {image.shape[0]} image(s) per process is too small for {method}'s "
                            f"BatchNorm after global pooling; use --set train.{method}.per_gpu_batch=2 (the global "
                            "batch is kept by accumulation), or train on several GPUs, where SyncBatchNorm pools "
                            "them") from None
        return criterion(out, label)

    return Objective(optimizer, lambda it: set_lr(optimizer, base, it, iters, power), loss, (criterion,))


def self_supervised(cfg: Mapping[str, Any], model: nn.Module, num_samples: int) -> Objective:
    """The self-supervised AlignSeg recipe: AdamW on decoder + queries, lr halved every ``step_epochs``."""
    from segrepro.engine.ssl_loss import NEGATIVE_PRESSURE, alignseg_ssl_loss

    opt_cfg = cfg["optimizer"]
    groups = model.param_groups(float(opt_cfg.get("weight_decay", 0.04)))  # type: ignore[operator]
    optimizer = torch.optim.AdamW(groups, lr=float(opt_cfg["lr"]))
    base, step, gamma = float(opt_cfg["lr"]), int(opt_cfg.get("step_epochs", 3)), float(opt_cfg.get("gamma", 0.5))
    per_epoch = max(1, math.ceil(num_samples / int(cfg["batch_size"])))
    pressure = float(cfg.get("negative_pressure", NEGATIVE_PRESSURE.get(str(cfg.get("dataset_config", "voc")), 0.11)))

    def set_epoch_lr(it: int) -> float:
        lr = base * gamma ** ((it // per_epoch) // step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def loss(net: nn.Module, batch: Mapping[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
        parts = alignseg_ssl_loss(net(crops), negative_pressure=pressure)
        return parts["loss"], {k: v.detach() for k, v in parts.items() if k != "loss"}

    return Objective(optimizer, set_epoch_lr, loss)


def iterations_for(cfg: Mapping[str, Any], num_samples: int) -> int:
    """Recipes give ``iterations`` or ``epochs`` (the self-supervised one counts epochs)."""
    if "iterations" in cfg:
        return int(cfg["iterations"])
    return int(cfg["epochs"]) * max(1, math.ceil(num_samples / int(cfg["batch_size"])))
