"""Segmentation losses of the official recipes: CE, OHEM-CE (two official threshold rules), Lovász-softmax.

A recipe's loss is a weighted sum of *terms*; each term names a model output (``main`` or an aux key of
:class:`~segrepro.models.outputs.SegOutput`), a loss type and a weight, so every method's official
combination (e.g. ACFNet's 0.7·OHEM(fine) + 0.6·CE(coarse) + 0.4·CE(aux) + Lovász(main)) is data in
params.yaml, not code. Logits are upsampled bilinearly (align_corners=True) to the label size first, as
all official criteria do; this also fixes ACFNet's crash (Lovász on stride-8 logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.models.outputs import SegOutput

if TYPE_CHECKING:
    from segrepro.engine.recipe import LossCfg

IGNORE_INDEX = 255


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
    rule: str = "gald",
) -> Tensor:
    """Online hard example mining CE, applied **per image** (the official runs use 1 image per GPU).

    ``p_gt`` is the softmax probability of the true class over the N valid pixels, sorted ascending.
    ``rule="gald"`` (GALD, DGCNet, ACFNet): threshold = max(thresh, sorted[min(N, min_kept) − 1]); keep
    ``p_gt ≤ threshold`` (so nothing is dropped when min_kept ≥ N); CE mean over the kept pixels.
    ``rule="ann"`` (torchcv FSOhemCELoss): threshold = max(sorted[min(min_kept, N − 1)], thresh); keep
    ``p_gt < threshold``; plain mean of the (class-weighted) per-pixel CE.
    """
    if rule not in ("gald", "ann"):
        raise ValueError(f"unknown OHEM rule {rule!r}")
    losses = []
    for lg, tg in zip(logits, target, strict=True):
        valid = tg != ignore_index
        flat_t = tg[valid]
        n = flat_t.numel()
        pixel_ce = F.cross_entropy(
            lg.unsqueeze(0), tg.unsqueeze(0), weight=weight, ignore_index=ignore_index, reduction="none"
        )[0][valid]
        if n == 0:
            losses.append(lg.sum() * 0.0)
            continue
        with torch.no_grad():
            prob = torch.softmax(lg.float(), dim=0).permute(1, 2, 0)[valid]
            p_gt = prob.gather(1, flat_t.unsqueeze(1)).squeeze(1)
            sorted_p = torch.sort(p_gt).values
            if rule == "gald":
                threshold = max(thresh, float(sorted_p[max(min(n, min_kept), 1) - 1]))
                keep = p_gt <= threshold
            else:
                threshold = max(float(sorted_p[min(min_kept, n - 1)]), thresh)
                keep = p_gt < threshold
        kept = pixel_ce[keep]
        if rule == "gald" and weight is not None:
            w = weight[flat_t[keep]]
            losses.append((kept.sum() / w.sum().clamp_min(1e-12)) if kept.numel() else lg.sum() * 0.0)
        else:
            losses.append(kept.mean() if kept.numel() else lg.sum() * 0.0)
    return torch.stack(losses).mean()


def lovasz_softmax(probs: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Lovász-softmax (Berman et al. 2018) over the whole batch (per_image=False), averaged over the
    classes present in the labels. All classes are sorted in one batched call rather than a loop."""
    c = probs.shape[1]
    probs = probs.permute(0, 2, 3, 1).reshape(-1, c)
    target = target.reshape(-1)
    valid = target != ignore_index
    probs, target = probs[valid], target[valid]
    if target.numel() == 0:
        return probs.sum() * 0.0
    fg = torch.nn.functional.one_hot(target, c).to(probs.dtype).t()  # (C, N)
    present = fg.sum(1) > 0
    fg, p = fg[present], probs.t()[present]
    errors_sorted, perm = torch.sort((fg - p).abs(), dim=1, descending=True)
    fg_sorted = fg.gather(1, perm)
    gts = fg_sorted.sum(1, keepdim=True)
    jaccard = 1.0 - (gts - fg_sorted.cumsum(1)) / (gts + (1.0 - fg_sorted).cumsum(1))
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)  # Lovász extension gradient
    return (errors_sorted * grad).sum(1).mean()


@dataclass(frozen=True)
class LossTerm:
    """One weighted term: ``weight · loss(output)``; ``output`` is ``"main"`` or an aux name."""

    output: str
    loss: str  # "ce" | "ohem" | "lovasz"
    weight: float = 1.0


class SegCriterion(nn.Module):
    """Weighted sum of :class:`LossTerm` over a :class:`SegOutput`; returns the total and each term."""

    def __init__(
        self,
        terms: Sequence[LossTerm],
        ignore_index: int = IGNORE_INDEX,
        class_weights: Sequence[float] | None = None,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        ohem_rule: str = "gald",
    ) -> None:
        super().__init__()
        for t in terms:
            if t.loss not in ("ce", "ohem", "lovasz"):
                raise ValueError(f"unknown loss type {t.loss!r} (ce, ohem or lovasz)")
        self.terms = list(terms)
        self.ignore_index = ignore_index
        self.ohem: dict[str, Any] = dict(thresh=ohem_thresh, min_kept=ohem_min_kept, rule=ohem_rule)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", weight, persistent=False)

    def _output(self, out: SegOutput, name: str) -> Tensor:
        if name == "main":
            return out.main
        if name not in out.aux:
            raise KeyError(f"loss term needs output {name!r}; the model returned {['main', *out.aux]}")
        return out.aux[name]

    def forward(self, out: SegOutput, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        size = target.shape[-2:]
        parts: dict[str, Tensor] = {}
        total = None
        for t in self.terms:
            logits = self._output(out, t.output)
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
            logits = logits.float()
            if t.loss == "ce":
                value = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
            elif t.loss == "ohem":
                value = ohem_cross_entropy(
                    logits, target, ignore_index=self.ignore_index, weight=self.class_weights, **self.ohem
                )
            else:
                value = lovasz_softmax(torch.softmax(logits, dim=1), target, self.ignore_index)
            parts[f"{t.loss}_{t.output}"] = value.detach()
            total = t.weight * value if total is None else total + t.weight * value
        assert total is not None, "a criterion needs at least one term"
        return total, parts


def build_criterion(cfg: LossCfg, ignore_index: int = IGNORE_INDEX) -> SegCriterion:
    """Criterion from a recipe's validated ``loss`` block (see params.yaml)."""
    terms = [LossTerm(t.output, t.loss, t.weight) for t in cfg.terms]
    return SegCriterion(
        terms,
        ignore_index=ignore_index,
        class_weights=list(cfg.class_weights) if cfg.class_weights else None,
        ohem_thresh=cfg.ohem.thresh,
        ohem_min_kept=cfg.ohem.min_kept,
        ohem_rule=cfg.ohem.rule,
    )
