"""Losses against direct reference computations on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segrepro.engine import losses as losses_module
from segrepro.engine.losses import build_criterion, lovasz_softmax, ohem_cross_entropy
from segrepro.engine.recipe import LossCfg
from segrepro.engine.schedule import poly_lr
from segrepro.models.outputs import SegOutput

P_GT = [0.95, 0.9, 0.8, 0.6, 0.3, 0.1]


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, one image of 1×7 pixels: GT class 0 with the probabilities above, then one ignored."""
    logit0 = torch.tensor([math.log(p / (1 - p)) for p in P_GT] + [0.0], dtype=torch.float64)
    logits = torch.stack([logit0, torch.zeros_like(logit0)]).view(1, 2, 1, 7)
    target = torch.tensor([0] * 6 + [255]).view(1, 1, 7)
    return logits, target


def _ce(ps: list[float]) -> float:
    return sum(-math.log(p) for p in ps) / len(ps)


@pytest.mark.parametrize(
    ("rule", "min_kept", "kept"),
    [
        ("gald", 4, [0.8, 0.6, 0.3, 0.1]),  # min_kept binds: threshold = 4th smallest = 0.8 > 0.7, keep ≤
        ("gald", 2, [0.6, 0.3, 0.1]),  # thresh binds: 2nd smallest 0.3 < 0.7
        ("gald", 100, P_GT),  # min_kept > N: nothing dropped
        ("ann", 4, [0.8, 0.6, 0.3, 0.1]),  # sorted[4] = 0.9, keep <
        ("ann", 2, [0.6, 0.3, 0.1]),  # sorted[2] = 0.6 < 0.7 → 0.7, keep <
    ],
)
def test_ohem_matches_reference(rule: str, min_kept: int, kept: list[float]) -> None:
    logits, target = _case()
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=min_kept, rule=rule)
    assert got.item() == pytest.approx(_ce(kept), rel=1e-9)


def test_ohem_is_per_image_mean() -> None:
    logits, target = _case()
    both = ohem_cross_entropy(torch.cat([logits, logits]), torch.cat([target, target]), 0.7, 4)
    assert both.item() == pytest.approx(_ce([0.8, 0.6, 0.3, 0.1]), rel=1e-9)


def test_ohem_class_weights_ann_is_plain_mean() -> None:
    logits, target = _case()
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    got = ohem_cross_entropy(logits, target, 0.7, 4, weight=w, rule="ann")
    assert got.item() == pytest.approx(2.0 * _ce([0.8, 0.6, 0.3, 0.1]), rel=1e-9)


def test_lovasz_perfect_and_wrong() -> None:
    target = torch.tensor([[[0, 1], [1, 255]]])
    perfect = torch.tensor([[[[1.0, 0.0], [0.0, 0.5]], [[0.0, 1.0], [1.0, 0.5]]]])
    assert lovasz_softmax(perfect, target).item() == pytest.approx(0.0)
    assert lovasz_softmax(1 - perfect, target).item() == pytest.approx(1.0)


def test_criterion_upsamples_and_weights_terms() -> None:
    torch.manual_seed(0)
    main, dsn = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 16, 16))
    crit = build_criterion(LossCfg.model_validate({"terms": [{"output": "main", "loss": "ce"},
                                                         {"output": "dsn", "loss": "ce", "weight": 0.4}]}).model_dump())
    total, parts = crit(SegOutput(main, 4, {"dsn": dsn}, {"dsn": 4}), target)
    up = lambda t: torch.nn.functional.interpolate(t, size=(16, 16), mode="bilinear", align_corners=True)  # noqa: E731
    ref = torch.nn.functional.cross_entropy(up(main), target) + 0.4 * torch.nn.functional.cross_entropy(up(dsn), target)
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)
    assert set(parts) == {"ce_main", "ce_dsn"}


def test_criterion_names_missing_output() -> None:
    crit = build_criterion(LossCfg.model_validate({"terms": [{"output": "coarse", "loss": "ce"}]}).model_dump())
    with pytest.raises(KeyError, match="coarse"):
        crit(SegOutput(torch.zeros(1, 2, 2, 2), 1), torch.zeros(1, 2, 2, dtype=torch.long))


def test_poly_lr() -> None:
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0


def _lovasz_reference(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-class loop straight from the paper's Algorithm 1, for comparison."""
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != 255
    p, t = p[keep], t[keep]
    losses = []
    for cls in range(c):
        fg = (t == cls).double()
        if fg.sum() == 0:
            continue
        err, order = torch.sort((fg - p[:, cls]).abs(), descending=True)
        fgs = fg[order]
        inter = fgs.sum() - fgs.cumsum(0)
        union = fgs.sum() + (1 - fgs).cumsum(0)
        jac = 1 - inter / union
        jac[1:] = jac[1:] - jac[:-1].clone()
        losses.append(torch.dot(err, jac))
    return torch.stack(losses).mean()


def test_lovasz_matches_per_class_reference() -> None:
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 4, (2, 7, 9), generator=g)  # class 4 absent: not averaged
    target[0, 0] = 255
    assert lovasz_softmax(probs, target).item() == pytest.approx(_lovasz_reference(probs, target).item(), rel=1e-12)


def test_lovasz_gradient_matches_per_class_reference() -> None:
    """The order and weights are computed outside autograd; the gradient must still be the reference's."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 7, 9), generator=g)
    target[1, 2] = 255
    (ours,) = torch.autograd.grad(lovasz_softmax(torch.softmax(logits, 1), target), logits)
    (ref,) = torch.autograd.grad(_lovasz_reference(torch.softmax(logits, 1), target), logits)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_lovasz_order_is_the_stable_descending_sort(dtype: torch.dtype) -> None:
    """The radix-key order equals torch's stable descending sort, ties (many here) by position."""
    g = torch.Generator().manual_seed(7)
    errors = (torch.randint(0, 50, (6, 400), generator=g) / 49).to(dtype)
    errors[2, 10:20] = 0.0
    want = torch.sort(errors, dim=1, descending=True, stable=True).indices
    assert torch.equal(losses_module._rowwise_descending_order(errors), want)


@pytest.mark.parametrize("rule", ["gald", "ann"])
@pytest.mark.parametrize("min_kept", [1, 30, 62, 63, 500])
def test_ohem_selection_equals_full_sort(rule: str, min_kept: int) -> None:
    """The threshold comes from kthvalue; the official codes read it from a full sort."""
    g = torch.Generator().manual_seed(min_kept)
    logits = torch.randn(1, 4, 7, 9, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (1, 7, 9), generator=g)
    p_gt = torch.softmax(logits[0], 0).permute(1, 2, 0).reshape(-1, 4).gather(1, target.reshape(-1, 1)).squeeze(1)
    ranked, n = torch.sort(p_gt).values, p_gt.numel()
    if rule == "gald":
        keep = p_gt <= max(0.7, float(ranked[max(min(n, min_kept), 1) - 1]))
    else:
        keep = p_gt < max(float(ranked[min(min_kept, n - 1)]), 0.7)
    ce = F.cross_entropy(logits, target, reduction="none").reshape(-1)
    want = ce[keep].mean()
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=min_kept, rule=rule)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
