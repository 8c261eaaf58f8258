"""Test-side helpers for the official numeric fixtures in ../shared/reference/fixtures.

The building and comparison logic lives in :mod:`segrepro.models.fixtures` (``scripts/gpu-check.sh`` runs
the same code on CUDA); this module adds the assertions the tests make with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segrepro.models.fixtures import init_rule, layer3_dsn, manifest_entries, manifest_state_dict, scale_error

__all__ = ["assert_manifest_keys", "assert_matches", "evaluate_with_layer3_dsn", "init_rule", "load_input",
           "load_manifest_weights", "manifest_entries", "manifest_state_dict"]


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
    worst, ok = scale_error(out, torch.from_numpy(np.load(ref_path)))
    assert ok, f"{ref_path.name}: max|Δ|/max|ref| = {worst:.3e} exceeds tolerance"


def load_input(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path))


def evaluate_with_layer3_dsn(model: nn.Module, fixtures_dir: Path, method: str, variant: str) -> dict:
    """GALD/DGCNet fixtures: the manifest weights, one eval forward on ``input.npy`` and the layer3 ``dsn``."""
    meta = json.loads((fixtures_dir / method / "meta.json").read_text())
    manifest = fixtures_dir / method / f"manifest_{variant}.json"
    load_manifest_weights(model, fixtures_dir, manifest, gain=meta["init_gain"])
    out, dsn = layer3_dsn(model.eval(), load_input(fixtures_dir / method / "input.npy"))
    return {"variant": variant, "out": out, "dsn": dsn, "meta": meta}
