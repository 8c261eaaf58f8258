"""Objectives: how a micro-batch becomes a loss, and how the optimiser and lr evolve.

The supervised methods share one objective (the recipe's optimiser, poly lr, the recipe's loss terms on image/label);
the self-supervised AlignSeg has its own (the model's groups, step decay per epoch, multi-crop loss). The
training loop only sees an :class:`Objective`, so both run through the same resumable, DDP-aware loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from segrepro.engine.losses import build_criterion
from segrepro.engine.schedule import build_optimizer, make_optimizer, set_lr
from segrepro.errors import UserError

if TYPE_CHECKING:
    from segrepro.engine.recipe import Recipe

LossFn = Callable[[nn.Module, Mapping[str, Any], torch.device], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class Objective:
    optimizer: torch.optim.Optimizer
    set_lr: Callable[[int], float]  # sets every group's lr for an iteration; returns the base lr
    loss: LossFn
    modules: tuple[nn.Module, ...] = ()  # extra modules to move to the device (e.g. the criterion)


def supervised(cfg: Recipe, model: nn.Module, iterations: int) -> Objective:
    """The recipe's optimiser (the card's head prefixes take ``head_lr_mult``), poly lr over ``iterations``
    and the recipe's loss terms."""
    opt = cfg.optimizer
    assert cfg.loss is not None, "a validated supervised recipe has a loss"
    optimizer = build_optimizer(model, opt, cfg.card.head_prefixes)
    criterion = build_criterion(cfg.loss.model_dump(), cfg.ignore_index)

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
            method = cfg.method
            raise UserError(
                f"a micro-batch of {image.shape[0]} image(s) per process is too small for {method}'s "
                f"BatchNorm after global pooling; use --set train.{method}.per_gpu_batch=2 (the global "
                "batch is kept by accumulation), or train on several GPUs, where SyncBatchNorm pools "
                "them"
            ) from None
        return criterion(out, label)

    power = opt.poly_power
    assert power is not None, "a validated supervised recipe has poly_power"
    return Objective(optimizer, lambda it: set_lr(optimizer, opt.lr, it, iterations, power), loss, (criterion,))


def self_supervised(cfg: Recipe, model: nn.Module, num_samples: int) -> Objective:
    """The self-supervised AlignSeg recipe: the model's groups (decoder + queries), lr decayed by ``gamma``
    every ``step_epochs``."""
    from segrepro.engine.ssl_loss import alignseg_ssl_loss

    opt = cfg.optimizer
    optimizer = make_optimizer(model.param_groups(opt.weight_decay), opt)  # type: ignore[operator]
    per_epoch = max(1, math.ceil(num_samples / cfg.batch_size))
    pressure, step, gamma = cfg.negative_pressure, opt.step_epochs, opt.gamma
    assert pressure is not None and step is not None and gamma is not None, "validated self-supervised recipe"

    def set_epoch_lr(it: int) -> float:
        lr = opt.lr * gamma ** ((it // per_epoch) // step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def loss(net: nn.Module, batch: Mapping[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
        parts = alignseg_ssl_loss(net(crops), negative_pressure=pressure)
        return parts["loss"], {k: v.detach() for k, v in parts.items() if k != "loss"}

    return Objective(optimizer, set_epoch_lr, loss)
