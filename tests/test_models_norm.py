"""InPlaceABN-compatible norm: the official eval formula, BN-like training, names, sync conversion on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segrepro.models.norm import InPlaceABN, abs_scale_to_bn, convert_sync_norm


def filled(layer: InPlaceABN, seed: int = 0) -> InPlaceABN:
    """Random stats and a γ with negative entries, where |γ|+eps and γ differ."""
    g = torch.Generator().manual_seed(seed)
    c = layer.num_features
    with torch.no_grad():
        layer.weight.copy_(torch.randn(c, generator=g))
        layer.bias.copy_(torch.randn(c, generator=g))
        layer.running_mean.copy_(torch.randn(c, generator=g))
        layer.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return layer


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
def test_eval_math_is_the_inplace_abn_formula(activation: str) -> None:
    layer = filled(InPlaceABN(6, activation=activation)).eval()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    layer = layer.double()
    shape = (1, -1, 1, 1)
    ref = (x - layer.running_mean.view(shape)) / torch.sqrt(layer.running_var.view(shape) + 1e-5)
    ref = ref * (layer.weight.abs() + 1e-5).view(shape) + layer.bias.view(shape)
    if activation == "leaky_relu":
        ref = torch.where(ref >= 0, ref, 0.01 * ref)
    with torch.no_grad():
        out = layer(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert (layer.weight < 0).any()  # the |γ| path was really exercised


def test_equals_batchnorm_with_abs_scale() -> None:
    abn = filled(InPlaceABN(4, activation="identity")).eval()
    bn = nn.BatchNorm2d(4).eval()
    bn.load_state_dict(abn.state_dict())
    with torch.no_grad():
        bn.weight.copy_(abs_scale_to_bn(abn.weight))
        x = torch.randn(3, 4, 6, 6)
        torch.testing.assert_close(abn(x), bn(x))


def test_train_mode_updates_running_stats_like_batchnorm() -> None:
    abn = filled(InPlaceABN(5, activation="leaky_relu"))
    bn = nn.BatchNorm2d(5)
    bn.load_state_dict(abn.state_dict())
    x = torch.randn(4, 5, 3, 3) * 2 + 1
    out = abn(x)
    bn(x)
    torch.testing.assert_close(abn.running_mean, bn.running_mean)
    torch.testing.assert_close(abn.running_var, bn.running_var)
    assert int(abn.num_batches_tracked) == int(bn.num_batches_tracked) == 1
    # train mode normalises with batch statistics, then leaky ReLU 0.01
    xhat = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    y = xhat * (abn.weight.abs() + 1e-5).view(1, -1, 1, 1) + abn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, F.leaky_relu(y, 0.01), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert abn.weight.grad is not None and torch.isfinite(abn.weight.grad).all()


def test_state_dict_names_equal_batchnorm() -> None:
    abn, bn = InPlaceABN(3), nn.BatchNorm2d(3)
    assert list(abn.state_dict()) == list(bn.state_dict())
    assert [v.shape for v in abn.state_dict().values()] == [v.shape for v in bn.state_dict().values()]
    with pytest.raises(ValueError, match="activation must be one of"):
        InPlaceABN(3, activation="gelu")


def test_convert_sync_norm_leaves_cpu_model_usable() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), InPlaceABN(4))
    converted = convert_sync_norm(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert not converted[2].sync
    x = torch.randn(2, 3, 8, 8)
    converted.train()(x).mean().backward()
    assert converted.eval()(x).shape == (2, 4, 6, 6)
