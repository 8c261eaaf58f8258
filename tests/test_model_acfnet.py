"""ACFNet (unofficial zrl4836/ACFNet): official keys and numbers, head blocks at toy sizes, tiny train step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference_fixtures import assert_manifest_keys, assert_matches, load_input, load_manifest_weights

from segrepro.engine.losses import LossTerm, SegCriterion
from segrepro.models import build
from segrepro.models.acfnet_blocks import ACF, ASPP, FCNHead, class_channel_attention


@pytest.fixture(scope="module")
def fixture_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "acfnet"


@pytest.fixture(scope="module")
def r101(fixtures_dir: Path, fixture_dir: Path) -> torch.nn.Module:
    """The official configuration filled with the init-rule weights from the manifest names."""
    meta = json.loads((fixture_dir / "meta.json").read_text())
    model = build("acfnet", variant="r101")
    load_manifest_weights(model, fixtures_dir, fixture_dir / "manifest.json", gain=meta["init_gain"])
    return model.eval()


def test_manifest_keys(r101: torch.nn.Module, fixture_dir: Path) -> None:
    assert_manifest_keys(r101, fixture_dir / "manifest.json")


def test_fixture_outputs_and_eval_fusion(r101: torch.nn.Module, fixture_dir: Path) -> None:
    with torch.no_grad():
        out = r101(load_input(fixture_dir / "input.npy"))
    assert out.stride == 8 and out.aux_strides == {"fine": 8, "coarse": 8, "fcn": 8}
    assert_matches(out.aux["fine"], fixture_dir / "output.npy")
    assert_matches(out.aux["coarse"], fixture_dir / "aux_coarse.npy")
    assert_matches(out.aux["fcn"], fixture_dir / "aux_fcn.npy")
    # main is the official sliding-window evaluation's fusion, output.npy + aux_coarse.npy.
    assert torch.equal(out.main, out.aux["fine"] + out.aux["coarse"])
    fused_max = json.loads((fixture_dir / "meta.json").read_text())["outputs"]["eval_fused"]["max_abs"]
    assert abs(float(out.main.abs().max()) - fused_max) <= 2e-5 * fused_max


def test_attention_rows_are_softmax_of_max_minus_energy() -> None:
    torch.manual_seed(0)
    coarse, feats = torch.randn(2, 5, 45, 45), torch.randn(2, 7, 45, 45)
    att = class_channel_attention(coarse, feats)
    assert att.shape == (2, 5, 7)
    assert torch.allclose(att.sum(dim=-1), torch.ones(2, 5), atol=1e-6)
    energy = torch.einsum("bnp,bcp->bnc", coarse.flatten(2), feats.flatten(2))
    # max − E is a per-row shift of −E: the rows favour the *least* correlated channels, not softmax(E).
    assert torch.allclose(att, torch.softmax(-energy, dim=-1), atol=1e-6)
    assert not torch.allclose(att, torch.softmax(energy, dim=-1), atol=1e-3)


def test_aspp_shapes_and_image_pool_branch() -> None:
    torch.manual_seed(0)
    aspp = ASPP(8, 4).eval()
    y = aspp(torch.randn(2, 8, 45, 45))
    assert y.shape == (2, 20, 45, 45) and aspp.out_channels == 20
    pooled = y[:, 16:]  # b4: one value per image and channel, broadcast over the map
    assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    assert [aspp.b1[0].dilation, aspp.b2[0].dilation, aspp.b3[0].dilation] == [(12, 12), (24, 24), (36, 36)]


def test_acf_and_fcn_head_shapes() -> None:
    torch.manual_seed(0)
    acf = ACF(20, 6).eval()
    out = acf(torch.randn(2, 20, 45, 45), torch.randn(2, 5, 45, 45))
    assert out.shape == (2, 6, 45, 45) and torch.isfinite(out).all()
    assert FCNHead(8, 5).eval()(torch.randn(2, 8, 45, 45)).shape == (2, 5, 45, 45)


def test_tiny_train_step_upsamples_before_lovasz() -> None:
    """The official loss crashes (Lovász on stride-8 logits); with strides carried it trains."""
    torch.manual_seed(0)
    model = build("acfnet", variant="tiny").train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    # ceil-mode max pool: 64 → 32 → 17 → 9, so the logits are 9×9 at stride 8 and must be resized by size.
    assert out.main.shape == (2, 19, 9, 9) and out.stride == 8
    assert set(out.aux) == {"fine", "coarse", "fcn"} and all(a.shape == (2, 19, 9, 9) for a in out.aux.values())
    target = torch.randint(0, 19, (2, 64, 64))
    target[:, :4] = 255
    criterion = SegCriterion([
        LossTerm("fine", "ohem", 0.7), LossTerm("coarse", "ce", 0.6),
        LossTerm("fcn", "ce", 0.4), LossTerm("main", "lovasz", 1.0),
    ], ignore_index=255, ohem_thresh=0.6, ohem_min_kept=2000)
    loss, _ = criterion(out, target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert torch.equal(ev.main, ev.aux["fine"] + ev.aux["coarse"])
