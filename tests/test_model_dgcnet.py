"""DGCNet: manifest keys and official numbers (R50, R101, gain 0.85), DualGCN parts, tiny train/eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_fixtures import assert_manifest_keys, assert_matches, evaluate_with_layer3_dsn

from segrepro.models import SegOutput, build
from segrepro.models.dgcnet import DualGCN, SpatialGCN
from segrepro.models.gcn_blocks import ContextHead


@pytest.fixture(scope="module", params=["r50", "r101"])
def official(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    """Each official model built once per module."""
    return request.param, build("dgcnet", variant=request.param)


@pytest.fixture(scope="module")
def evaluated(official: tuple[str, torch.nn.Module], fixtures_dir: Path) -> dict:
    """Fixture weights (init_gain 0.85), one eval forward on input.npy; layer3 captured by a hook for ``dsn``."""
    variant, model = official
    result = evaluate_with_layer3_dsn(model, fixtures_dir, "dgcnet", variant)
    assert result["meta"]["init_gain"] == 0.85
    return result


def test_manifest_keys(official: tuple[str, torch.nn.Module], fixtures_dir: Path) -> None:
    variant, model = official
    assert_manifest_keys(model, fixtures_dir / "dgcnet" / f"manifest_{variant}.json")


def test_official_main_output(evaluated: dict, fixtures_dir: Path) -> None:
    out = evaluated["out"]
    assert isinstance(out, SegOutput) and out.stride == 8 and out.aux == {}
    assert_matches(out.main, fixtures_dir / "dgcnet" / f"output_{evaluated['variant']}.npy")


def test_official_dsn_output(evaluated: dict, fixtures_dir: Path) -> None:
    assert_matches(evaluated["dsn"], fixtures_dir / "dgcnet" / f"aux_dsn_{evaluated['variant']}.npy")


def _permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return x.flatten(2)[:, :, perm].reshape(x.shape)


def test_spatial_gcn_is_pixel_permutation_equivariant() -> None:
    """Only 1×1 convs and sums over all pixels: permuting the pixels permutes the output the same way."""
    torch.manual_seed(0)
    gcn = SpatialGCN(8).eval()
    x = torch.randn(2, 8, 6, 6)
    perm = torch.randperm(36)
    with torch.no_grad():
        out = gcn(x)
        torch.testing.assert_close(gcn(_permute_pixels(x, perm)), _permute_pixels(out, perm), rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape and bool((out >= 0).all())


def test_dual_gcn_matches_spec_formula() -> None:
    """Feature space per the spec: Z0 = Φ·Bmᵀ, Z = A(Z0) + Z0, W(Z), Y = Z·Bm; fused with X·G_loc + X."""
    torch.manual_seed(0)
    block = DualGCN(8).eval()
    x = torch.randn(2, 8, 45, 45)
    with torch.no_grad():
        local = block.local(x)
        assert local.shape[-2:] == (6, 6)  # 45 → 23 → 12 → 6 (padded stride 2)
        g_loc = F.interpolate(block.gcn_local_attention(local), size=(45, 45), mode="bilinear", align_corners=True)
        phi = block.bn_phi(block.phi(x)).flatten(2)
        bm = block.bn_theta(block.theta(x)).flatten(2)
        z0 = torch.einsum("bfp,bnp->bfn", phi, bm)
        adj = block.bn_adj(torch.einsum("mn,bfn->bmf", block.conv_adj.weight[:, :, 0], z0))
        z = block.bn_wg(torch.einsum("gf,bfn->bgn", block.conv_wg.weight[:, :, 0], adj.transpose(1, 2) + z0))
        y = torch.einsum("bgn,bnp->bgp", z, bm).reshape(2, 4, 45, 45)
        g_out = F.relu(x + block.bn3(block.conv3(y)))
        expected = block.final(torch.cat([x * g_loc + x, g_out], 1))
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)


def test_head_shapes() -> None:
    head = ContextHead(16, 8, 5, "dualgcn", DualGCN(8)).eval()
    assert head(torch.randn(2, 16, 45, 45)).shape == (2, 5, 45, 45)
    assert head(torch.randn(1, 16, 3, 5)).shape == (1, 5, 3, 5)  # every size works (all convs padded)


def test_tiny_train_and_eval() -> None:
    model = build("dgcnet", variant="tiny", num_classes=5).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.main.shape == (2, 5, 9, 9) and out.stride == 8  # 64 → 32 → 17 (ceil-mode pool) → 9
    assert set(out.aux) == {"dsn"} and out.aux["dsn"].shape == (2, 5, 9, 9) and out.aux_strides == {"dsn": 8}
    (out.main.mean() + 0.4 * out.aux["dsn"].mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        ev = model.eval()(torch.randn(1, 3, 64, 64))
    assert ev.aux == {} and torch.isfinite(ev.main).all()
