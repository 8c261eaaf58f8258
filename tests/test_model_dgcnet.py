"""DGCNet's DualGCN parts (spec formulas); its fixtures and tiny contract are in test_model_contextnet.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segrepro.models.dgcnet import DualGCN, SpatialGCN
from segrepro.models.gcn_blocks import ContextHead


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
