"""Helpers for checking a model against the official numeric fixtures in ../shared/reference/fixtures.

Weights are built from the *manifest* names with ``init_rule.py`` (aliases take the value of the entry
they alias), then loaded strictly, exactly as an independent checker would.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

DTYPES = {"float32": torch.float32, "int64": torch.int64, "float64": torch.float64}


@lru_cache(maxsize=None)
def init_rule(fixtures_dir: Path):
    spec = importlib.util.spec_from_file_location("segrepro_test_init_rule", fixtures_dir / "init_rule.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def manifest_entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())["entries"]


def manifest_state_dict(fixtures_dir: Path, manifest: Path, gain: float | None = None) -> dict[str, torch.Tensor]:
    """A state_dict with every manifest entry filled by the init rule, aliases honoured."""
    rule = init_rule(fixtures_dir)
    out: dict[str, torch.Tensor] = {}
    for e in manifest_entries(manifest):
        source = e.get("alias_of", e["name"])
        out[e["name"]] = rule.init_tensor(source, e["shape"], DTYPES[e["dtype"]], gain)
    return out


def assert_manifest_keys(model: nn.Module, manifest: Path) -> None:
    """state_dict names, shapes and order equal the manifest (``num_batches_tracked`` optional)."""
    ref = [(e["name"], tuple(e["shape"])) for e in manifest_entries(manifest)]
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    has_nbt = any(k.endswith("num_batches_tracked") for k, _ in ours)
    if not has_nbt:
        ref = [r for r in ref if not r[0].endswith("num_batches_tracked")]
    ref_names = dict(ref)
    missing = [k for k, _ in ref if k not in dict(ours)]
    unexpected = [k for k, _ in ours if k not in ref_names]
    wrong = [(k, s, ref_names[k]) for k, s in ours if k in ref_names and ref_names[k] != s]
    assert not missing and not unexpected and not wrong, (
        f"missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)}), "
        f"wrong shapes {wrong[:10]}"
    )
    assert [k for k, _ in ours] == [k for k, _ in ref], "state_dict order differs from the manifest"


def load_manifest_weights(model: nn.Module, fixtures_dir: Path, manifest: Path, gain: float | None = None) -> nn.Module:
    model.load_state_dict(manifest_state_dict(fixtures_dir, manifest, gain), strict=True)
    return model


def assert_matches(out: torch.Tensor, ref_path: Path) -> None:
    """The README's tolerance: |out − ref| ≤ 1e-5·|ref| + 2e-5·max|ref|, elementwise."""
    ref = torch.from_numpy(np.load(ref_path))
    out = out.detach().to(torch.float32).cpu()
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)} ({ref_path.name})"
    tol = 1e-5 * ref.abs() + 2e-5 * ref.abs().max()
    err = (out - ref).abs()
    worst = float((err / ref.abs().max()).max())
    assert bool((err <= tol).all()), f"{ref_path.name}: max|Δ|/max|ref| = {worst:.3e} exceeds tolerance"


def load_input(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path))


def evaluate_with_layer3_dsn(model: nn.Module, fixtures_dir: Path, method: str, variant: str) -> dict:
    """GALD/DGCNet fixtures: load the manifest weights, one eval forward on ``input.npy``, and the
    ``dsn`` head applied to layer3 (captured by a hook), which the official eval forward does not return."""
    meta = json.loads((fixtures_dir / method / "meta.json").read_text())
    load_manifest_weights(model, fixtures_dir, fixtures_dir / method / f"manifest_{variant}.json", gain=meta["init_gain"])
    model.eval()
    seen: dict[str, torch.Tensor] = {}
    hook = model.layer3.register_forward_hook(lambda _m, _i, out: seen.__setitem__("layer3", out))
    try:
        with torch.no_grad():
            out = model(load_input(fixtures_dir / method / "input.npy"))
            dsn = model.dsn(seen["layer3"])
    finally:
        hook.remove()
    return {"variant": variant, "out": out, "dsn": dsn, "meta": meta}
