"""GALD-Net and DGCNet share their ContextNet frame (deep-stem ResNet, OS 8, head + layer3 ``dsn``):
manifest keys and official numbers at R50 and R101, and the tiny variant's train/eval contract.
Each method's own block (GALD, DualGCN) is tested in its own file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_fixtures import assert_manifest_keys, assert_matches, evaluate_with_layer3_dsn

from segrepro.models import SegOutput, build

METHODS = ("gald", "dgcnet")
INIT_GAIN = {"gald": 1.0, "dgcnet": 0.85}  # the fixtures' init_rule gain (meta.json)


@pytest.fixture(scope="module", params=[(m, v) for m in METHODS for v in ("r50", "r101")], ids="-".join)
def official(request: pytest.FixtureRequest) -> tuple[str, str, torch.nn.Module]:
    """Each official model built once per module (GALD R101 at 369×401 is the slowest fixture)."""
    method, variant = request.param
    return method, variant, build(method, variant=variant)


@pytest.fixture(scope="module")
def evaluated(official: tuple[str, str, torch.nn.Module], fixtures_dir: Path) -> dict:
    """Fixture weights, one eval forward on input.npy; layer3 captured by a hook for ``dsn``."""
    method, variant, model = official
    result = evaluate_with_layer3_dsn(model, fixtures_dir, method, variant)
    assert result["meta"]["init_gain"] == INIT_GAIN[method]
    return {**result, "method": method}


def test_manifest_keys(official: tuple[str, str, torch.nn.Module], fixtures_dir: Path) -> None:
    method, variant, model = official
    assert_manifest_keys(model, fixtures_dir / method / f"manifest_{variant}.json")


def test_official_main_output(evaluated: dict, fixtures_dir: Path) -> None:
    out = evaluated["out"]
    assert isinstance(out, SegOutput) and out.stride == 8 and out.aux == {}
    assert_matches(out.main, fixtures_dir / evaluated["method"] / f"output_{evaluated['variant']}.npy")


def test_official_dsn_output(evaluated: dict, fixtures_dir: Path) -> None:
    assert_matches(evaluated["dsn"], fixtures_dir / evaluated["method"] / f"aux_dsn_{evaluated['variant']}.npy")


@pytest.mark.parametrize("method", METHODS)
def test_tiny_train_and_eval(method: str) -> None:
    model = build(method, variant="tiny", num_classes=5).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.main.shape == (2, 5, 9, 9) and out.stride == 8  # 64 → 32 → 17 (ceil-mode pool) → 9
    assert set(out.aux) == {"dsn"} and out.aux["dsn"].shape == (2, 5, 9, 9) and out.aux_strides == {"dsn": 8}
    (out.main.mean() + 0.4 * out.aux["dsn"].mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        ev = model.eval()(torch.randn(1, 3, 64, 64))
    assert ev.aux == {} and torch.isfinite(ev.main).all()
