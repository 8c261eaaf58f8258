"""Optimisers (SGD or AdamW, as the recipe names) and the poly learning-rate schedule."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from segrepro.errors import UserError


class OptimizerSettings(Protocol):
    """What the optimiser reads of a recipe: :class:`~segrepro.engine.recipe.OptimizerCfg`, or the GPU
    check's plain copy (its image has no pydantic)."""

    @property
    def name(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def momentum(self) -> float | None: ...
    @property
    def nesterov(self) -> bool | None: ...
    @property
    def head_lr_mult(self) -> float: ...


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float = 0.9) -> float:
    """``base · (1 − it/max)^power`` with it = 0 at the first step, updated every iteration."""
    return base_lr * (1.0 - min(iteration, max_iters) / max_iters) ** power


def _is_backbone(name: str, head_prefixes: tuple[str, ...]) -> bool:
    return not name.startswith(head_prefixes)


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimizerSettings) -> torch.optim.Optimizer:
    """The recipe's optimiser (``sgd`` with momentum/nesterov, or ``adamw``) over parameter ``groups``."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    assert cfg.momentum is not None and cfg.nesterov is not None, "a validated sgd recipe sets both"
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


def build_optimizer(
    model: nn.Module, cfg: OptimizerSettings, head_prefixes: tuple[str, ...] = ()
) -> torch.optim.Optimizer:
    """One parameter group, or two when the recipe gives the head its own lr multiplier.

    ``head_prefixes`` (the method card's) are the parameter-name prefixes of the head, everything else is
    backbone; the group's ``lr_mult`` is kept so :func:`set_lr` applies the schedule to both groups.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.head_lr_mult != 1.0:
        head = [p for n, p in params if not _is_backbone(n, head_prefixes)]
        backbone = [p for n, p in params if _is_backbone(n, head_prefixes)]
        if not head or not backbone:
            raise UserError(
                f"optimizer.head_lr_mult {cfg.head_lr_mult}: the method card's head prefixes "
                f"{list(head_prefixes)} split no head from the backbone; fix the card or drop the key"
            )
        groups = [{"params": backbone, "lr_mult": 1.0}, {"params": head, "lr_mult": cfg.head_lr_mult}]
    else:
        groups = [{"params": [p for _, p in params], "lr_mult": 1.0}]
    return make_optimizer(groups, cfg)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, iteration: int, max_iters: int, power: float) -> float:
    lr = poly_lr(base_lr, iteration, max_iters, power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr
