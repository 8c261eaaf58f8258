"""ANN (MendelXu/ANN): official keys and numbers, the shared APNB query/key, AFNB/APNB at toy sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_fixtures import (
    assert_manifest_keys,
    assert_matches,
    load_input,
    load_manifest_weights,
    init_rule,
    manifest_entries,
)

from segrepro.models import build
from segrepro.models.ann_blocks import AFNB, APNB, AsymmetricAttention, psp_sample


@pytest.fixture(scope="module")
def fixture_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ann"


@pytest.fixture(scope="module")
def r101(fixtures_dir: Path, fixture_dir: Path) -> torch.nn.Module:
    """The official configuration filled with the init-rule weights from the manifest names."""
    meta = json.loads((fixture_dir / "meta.json").read_text())
    model = build("ann", variant="r101")
    load_manifest_weights(model, fixtures_dir, fixture_dir / "manifest.json", gain=meta["init_gain"])
    return model.eval()


def test_manifest_keys(r101: torch.nn.Module, fixture_dir: Path) -> None:
    assert_manifest_keys(r101, fixture_dir / "manifest.json")


def test_fixture_main_and_dsn(r101: torch.nn.Module, fixture_dir: Path) -> None:
    with torch.no_grad():
        out = r101(load_input(fixture_dir / "input.npy"))
    assert out.stride == 1 and out.aux_strides == {"dsn": 1}
    assert_matches(out.main, fixture_dir / "output.npy")
    assert_matches(out.aux["dsn"], fixture_dir / "aux_dsn.npy")


def test_apnb_query_key_share_tensors_after_strict_load(
    r101: torch.nn.Module, fixtures_dir: Path, fixture_dir: Path
) -> None:
    """Both manifest names load into one tensor (f_key first, then f_query); the value is the alias_of one."""
    stage = r101.context[2].stages[0]
    assert stage.f_query is stage.f_key
    assert r101.fusion.stages[0].f_query is not r101.fusion.stages[0].f_key
    aliases = [e for e in manifest_entries(fixture_dir / "manifest.json") if "alias_of" in e]
    assert len(aliases) == 7
    rule, state = init_rule(fixtures_dir), r101.state_dict()
    for e in aliases:
        assert state[e["name"]].data_ptr() == state[e["alias_of"]].data_ptr()
        dtype = state[e["name"]].dtype
        assert torch.equal(state[e["name"]], rule.init_tensor(e["alias_of"], e["shape"], dtype))


def test_psp_sampling_gives_110_anchors_in_order() -> None:
    x = torch.randn(2, 4, 45, 45)
    s = psp_sample(x)
    assert s.shape == (2, 4, 110)
    assert torch.allclose(s[..., 0], x.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(s[..., 1:10], F.adaptive_avg_pool2d(x, 3).flatten(2))
    assert torch.equal(s[..., 46:], F.adaptive_avg_pool2d(x, 8).flatten(2))


def test_attention_matches_scaled_dot_product_reference() -> None:
    torch.manual_seed(0)
    att = AsymmetricAttention(6, 8, key_channels=4, value_channels=5, out_channels=7).eval()
    torch.nn.init.normal_(att.W.weight)  # officially zero-initialised; make the context visible
    low, high = torch.randn(2, 6, 45, 45), torch.randn(2, 8, 45, 45)
    q = att.f_query(high).flatten(2)  # (B, K, hw)
    k = psp_sample(att.f_key(low))  # (B, K, 110)
    v = psp_sample(att.f_value(low))  # (B, V, 110)
    sim = torch.softmax(torch.einsum("bkp,bks->bps", q, k) / 2.0, dim=-1)  # 1/√4
    assert torch.allclose(sim.sum(-1), torch.ones(2, 45 * 45), atol=1e-5)
    expected = att.W(torch.einsum("bps,bvs->bvp", sim, v).reshape(2, 5, 45, 45))
    assert torch.allclose(att(low, high), expected, atol=1e-5)


def test_afnb_apnb_shapes_and_zero_initialised_context() -> None:
    torch.manual_seed(0)
    afnb, apnb = AFNB(6, 8, 4, 4).eval(), APNB(8, 4, 4).eval()
    low, high = torch.randn(2, 6, 45, 45), torch.randn(2, 8, 45, 45)
    assert afnb(low, high).shape == (2, 8, 45, 45)
    assert apnb(high).shape == (2, 8, 45, 45)
    assert apnb.stages[0].f_query is apnb.stages[0].f_key
    assert torch.equal(afnb.stages[0](low, high), torch.zeros(2, 8, 45, 45))  # W starts at zero


def test_tiny_forward_backward() -> None:
    torch.manual_seed(0)
    model = build("ann", variant="tiny").train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.main.shape == (2, 19, 64, 64) and out.stride == 1
    assert set(out.aux) == {"dsn"} and out.aux["dsn"].shape == (2, 19, 64, 64)
    target = torch.randint(0, 19, (2, 64, 64))
    loss = F.cross_entropy(out.main, target) + 0.4 * F.cross_entropy(out.aux["dsn"], target)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert ev.main.shape == (2, 19, 64, 64) and torch.isfinite(ev.main).all()
