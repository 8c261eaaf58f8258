"""Comparison against the official numeric fixtures (``reference/fixtures``, README there): one place for
the tests and ``scripts/gpu-check.sh``.

Weights are built from the *manifest* names with the fixtures' ``init_rule.py`` (an alias takes the value
of the entry it aliases) and loaded strictly, as an independent checker would. Inputs are regenerated
with ``init_rule.make_input`` (bit-identical to the stored ``input*.npy``), so a copy of the fixtures
needs only the manifests, ``meta.json`` and the reference outputs. :data:`CASES` lists every official
configuration with its reference outputs.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from segrepro.models.outputs import SegOutput
from segrepro.models.registry import build

DTYPES = {"float32": torch.float32, "int64": torch.int64, "float64": torch.float64}
REL_TOL, SCALE_TOL = 1e-5, 2e-5  # README: |out − ref| ≤ 1e-5·|ref| + 2e-5·max|ref|, elementwise


@cache
def init_rule(fixtures_dir: Path) -> ModuleType:
    """The fixtures' own ``init_rule.py``, loaded from that folder (never a copy of its logic)."""
    spec = importlib.util.spec_from_file_location("segrepro_fixture_init_rule", fixtures_dir / "init_rule.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_entries(path: Path) -> list[dict]:
    """``[{name, shape, dtype[, alias_of]}]`` in state_dict order; the SSL manifests' ``{name: {shape, dtype}}``
    form is read as the same list."""
    raw = json.loads(path.read_text())
    if "entries" in raw:
        return raw["entries"]
    return [{"name": k, "shape": v["shape"], "dtype": v["dtype"]} for k, v in raw.items()]


def manifest_state_dict(fixtures_dir: Path, manifest: Path, gain: float | None = None) -> dict[str, Tensor]:
    """A state_dict with every manifest entry filled by the init rule, aliases honoured."""
    rule = init_rule(fixtures_dir)
    out: dict[str, Tensor] = {}
    for e in manifest_entries(manifest):
        source = e.get("alias_of", e["name"])
        out[e["name"]] = rule.init_tensor(source, e["shape"], DTYPES[e["dtype"]], gain)
    return out


def scale_error(out: Tensor, ref: Tensor) -> tuple[float, bool]:
    """(max|Δ|/max|ref|, whether every element is within the README tolerance); shapes must agree."""
    out = out.detach().to(torch.float32).cpu()
    if out.shape != ref.shape:
        raise ValueError(f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    peak = ref.abs().max()
    err = (out - ref).abs()
    return float(err.max() / peak), bool((err <= REL_TOL * ref.abs() + SCALE_TOL * peak).all())


def layer3_dsn(model: nn.Module, x: Tensor) -> tuple[SegOutput, Tensor]:
    """GALD/DGCNet: (eval output, ``dsn`` head on layer3), the latter captured by a hook because the official
    eval forward does not return it."""
    seen: dict[str, Tensor] = {}
    layer3, dsn = cast(nn.Module, model.layer3), cast(nn.Module, model.dsn)
    hook = layer3.register_forward_hook(lambda _m, _i, out: seen.__setitem__("layer3", out))
    try:
        with torch.no_grad():
            out = model(x)
            return out, dsn(seen["layer3"])
    finally:
        hook.remove()


def _main_and_aux(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        out = model(x)
    return {"main": out.main, **{f"aux.{k}": v for k, v in out.aux.items()}}


def _contextnet(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    out, dsn = layer3_dsn(model, x)
    return {"main": out.main, "dsn": dsn}


@dataclass(frozen=True)
class FixtureCase:
    """One official configuration: which manifest fills it, its input, and ``outputs`` (name → reference file)."""

    method: str
    variant: str
    manifest: str
    input_name: str
    input_shape: tuple[int, ...]
    outputs: dict[str, str]
    run: Callable[[nn.Module, Tensor], dict[str, Tensor]] = _main_and_aux
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.variant

    def files(self) -> list[str]:
        """The fixture files this case reads (relative to the fixtures folder)."""
        return [
            f"{self.method}/meta.json",
            f"{self.method}/{self.manifest}",
            *(f"{self.method}/{f}" for f in self.outputs.values()),
        ]


_CTX = {
    f"{m}-{v}": FixtureCase(
        m,
        v,
        f"manifest_{v}.json",
        "input",
        (1, 3, *hw),
        {"main": f"output_{v}.npy", "dsn": f"aux_dsn_{v}.npy"},
        _contextnet,
    )
    for m, hw in (("gald", (369, 401)), ("dgcnet", (97, 129)))
    for v in ("r50", "r101")
}
_SSL = (1, 3, 224, 224)
CASES: tuple[FixtureCase, ...] = (
    FixtureCase(
        "alignseg", "r101", "manifest.json", "input", (1, 3, 97, 129), {"main": "output.npy", "aux.dsn": "aux_dsn.npy"}
    ),
    FixtureCase(
        "acfnet",
        "r101",
        "manifest.json",
        "input",
        (1, 3, 97, 129),
        {"aux.fine": "output.npy", "aux.coarse": "aux_coarse.npy", "aux.fcn": "aux_fcn.npy"},
    ),
    *_CTX.values(),
    FixtureCase(
        "ann", "r101", "manifest.json", "input", (1, 3, 97, 129), {"main": "output.npy", "aux.dsn": "aux_dsn.npy"}
    ),
    FixtureCase("alignseg_ssl", "voc", "manifest.json", "alignseg_ssl/input_224", _SSL, {"main": "output.npy"}),
    FixtureCase(
        "alignseg_ssl",
        "voc",
        "manifest.json",
        "alignseg_ssl/input_256",
        (1, 3, 256, 256),
        {"main": "output_256.npy"},
        label="voc-256",
    ),
    FixtureCase(
        "alignseg_ssl", "coco27", "manifest_coco27.json", "alignseg_ssl/input_224", _SSL, {"main": "output_coco27.npy"}
    ),
)


def fixture_files() -> list[str]:
    """Every file :data:`CASES` reads, ``init_rule.py`` included: what a copy of the fixtures must hold."""
    return sorted({"init_rule.py", *(f for case in CASES for f in case.files())})


def check_case(
    case: FixtureCase, fixtures_dir: Path, device: torch.device | str = "cpu"
) -> dict[str, tuple[float, bool]]:
    """Build ``case`` with the fixture weights, run it on ``device`` in float32 and compare every output:
    ``{output: (max|Δ|/max|ref|, within tolerance)}``."""
    meta = json.loads((fixtures_dir / case.method / "meta.json").read_text())
    model = build(case.method, variant=case.variant)
    state = manifest_state_dict(fixtures_dir, fixtures_dir / case.method / case.manifest, meta.get("init_gain"))
    model.load_state_dict(state, strict=True)
    model = model.eval().to(device)
    x = init_rule(fixtures_dir).make_input(case.input_shape, name=case.input_name).to(device)
    outs = case.run(model, x)
    return {
        k: scale_error(outs[k], torch.from_numpy(np.load(fixtures_dir / case.method / f)))
        for k, f in case.outputs.items()
    }
