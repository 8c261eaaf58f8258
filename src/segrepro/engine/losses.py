"""Segmentation losses of the official recipes: CE, OHEM-CE (two official threshold rules), Lovász-softmax.

A recipe's loss is a weighted sum of *terms*; each term names a model output (``main`` or an aux key of
:class:`~segrepro.models.outputs.SegOutput`), a loss type and a weight, so every method's official
combination (e.g. ACFNet's 0.7·OHEM(fine) + 0.6·CE(coarse) + 0.4·CE(aux) + Lovász(main)) is data in
params.yaml, not code. Logits are upsampled bilinearly (align_corners=True) to the label size first, as
all official criteria do; this also fixes ACFNet's crash (Lovász on stride-8 logits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.data.transforms import IGNORE_INDEX
from segrepro.models.outputs import SegOutput


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
            # the official codes sort p_gt to read one order statistic; a selection gives the same value in O(N)
            if rule == "gald":
                threshold = max(thresh, _kth_smallest(p_gt, max(min(n, min_kept), 1)))
                keep = p_gt <= threshold
            else:
                threshold = max(_kth_smallest(p_gt, min(min_kept, n - 1) + 1), thresh)
                keep = p_gt < threshold
        kept = pixel_ce[keep]
        if rule == "gald" and weight is not None:
            w = weight[flat_t[keep]]
            losses.append((kept.sum() / w.sum().clamp_min(1e-12)) if kept.numel() else lg.sum() * 0.0)
        else:
            losses.append(kept.mean() if kept.numel() else lg.sum() * 0.0)
    return torch.stack(losses).mean()


def _kth_smallest(values: Tensor, k: int) -> float:
    """The k-th smallest (1-based, k ≤ N) of a 1-D tensor: ``sort(values)[k - 1]`` without the sort."""
    return float(torch.kthvalue(values, k).values)


def _rowwise_descending_order(errors: Tensor) -> Tensor:
    """Per row of non-negative ``errors`` (C, N), the indices that sort it descending, ties by position:
    ``torch.sort(errors, dim=1, descending=True, stable=True).indices``.

    For float32 and narrower, one stable sort of int64 keys (row, then the error's bit pattern reversed)
    replaces the float sort per row: non-negative floats order like their int32 bit patterns, and on CPU torch
    sorts such keys with a parallel radix sort. float64 bit patterns leave no room for the row, so it sorts
    as floats.
    """
    if errors.dtype == torch.float64:
        return torch.sort(errors, dim=1, descending=True, stable=True).indices
    c, n = errors.shape
    offsets = torch.arange(c, device=errors.device).unsqueeze(1)
    keys = errors.float().contiguous().view(torch.int32).long()  # ≥ 0 for the non-negative errors
    keys.neg_().add_((offsets << 31) + 0x7FFFFFFF)
    order = torch.sort(keys.view(-1), stable=True).indices.view(c, n)
    return order.sub_(offsets * n)


def lovasz_softmax(probs: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Lovász-softmax (Berman et al. 2018) over the whole batch (per_image=False), averaged over the
    classes present in the labels.

    The loss is linear in the errors once their order is known, so the order, the Jaccard increments and
    their scatter back to pixel order are computed without autograd, and the graph holds only
    ``errors · weights``: the same value and gradient as sorting inside autograd, at a fraction of the
    memory traffic (this loss dominated the CPU step of AlignSeg and ACFNet).
    """
    c = probs.shape[1]
    p = probs.transpose(0, 1).reshape(c, -1)  # (C, N)
    target = target.reshape(-1)
    valid = target != ignore_index
    if not bool(valid.all()):
        p, target = p[:, valid], target[valid]
    n = target.numel()
    if n == 0:
        return probs.sum() * 0.0
    counts = torch.bincount(target, minlength=c)
    present = (counts > 0).nonzero().squeeze(1)
    p = p.index_select(0, present)
    fg = target.unsqueeze(0) == present.unsqueeze(1)  # (C', N)
    errors = (fg.to(p.dtype) - p).abs()
    acc = torch.promote_types(p.dtype, torch.float32)  # counts stay exact integers (N < 2^24 per row)
    with torch.no_grad():
        perm = _rowwise_descending_order(errors)
        fg_sorted = fg.gather(1, perm).to(acc)
        hits = fg_sorted.cumsum(1)
        gts = counts.index_select(0, present).to(acc).unsqueeze(1)
        seen = torch.arange(1, n + 1, device=p.device, dtype=acc)
        jaccard = 1.0 - (gts - hits) / (gts + seen - hits)
        increments = torch.diff(jaccard, dim=1, prepend=jaccard.new_zeros(jaccard.shape[0], 1))
        weights = torch.empty_like(increments).scatter_(1, perm, increments)
    return (errors * weights).sum(1).mean()


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


def build_criterion(loss: Mapping[str, Any], ignore_index: int = IGNORE_INDEX) -> SegCriterion:
    """Criterion from a recipe's ``loss`` block with its defaults filled: the validated
    :class:`~segrepro.engine.recipe.LossCfg`'s ``model_dump()``, or the GPU check's plain copy (no pydantic)."""
    terms = [LossTerm(t["output"], t["loss"], t["weight"]) for t in loss["terms"]]
    weights, ohem = loss.get("class_weights"), loss["ohem"]
    return SegCriterion(
        terms,
        ignore_index=ignore_index,
        class_weights=list(weights) if weights else None,
        ohem_thresh=ohem["thresh"],
        ohem_min_kept=ohem["min_kept"],
        ohem_rule=ohem["rule"],
    )
