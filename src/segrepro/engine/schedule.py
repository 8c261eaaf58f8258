"""Optimiser and the poly learning-rate schedule of every official recipe."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float = 0.9) -> float:
    """``base · (1 − it/max)^power`` with it = 0 at the first step, updated every iteration."""
    return base_lr * (1.0 - min(iteration, max_iters) / max_iters) ** power


def _is_backbone(name: str, head_prefixes: tuple[str, ...]) -> bool:
    return not name.startswith(head_prefixes)


def build_optimizer(model: nn.Module, cfg: Mapping, head_prefixes: tuple[str, ...] = ()) -> torch.optim.SGD:
    """SGD with one group, or two when the recipe gives the head its own lr multiplier.

    ``head_prefixes`` are the state_dict prefixes of the head (everything else is backbone); the group's
    ``lr_mult`` is kept so :func:`set_lr` applies the poly schedule to both groups.
    """
    mult = float(cfg.get("head_lr_mult", 1.0))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if mult != 1.0 and head_prefixes:
        groups = [
            {"params": [p for n, p in params if _is_backbone(n, head_prefixes)], "lr_mult": 1.0},
            {"params": [p for n, p in params if not _is_backbone(n, head_prefixes)], "lr_mult": mult},
        ]
    else:
        groups = [{"params": [p for _, p in params], "lr_mult": 1.0}]
    return torch.optim.SGD(
        groups,
        lr=float(cfg["lr"]),
        momentum=float(cfg.get("momentum", 0.9)),
        weight_decay=float(cfg.get("weight_decay", 5e-4)),
        nesterov=bool(cfg.get("nesterov", False)),
    )


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, iteration: int, max_iters: int, power: float) -> float:
    lr = poly_lr(base_lr, iteration, max_iters, power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr
