"""Import official released checkpoints into our models, strictly, and export them back losslessly.

Our state_dict names equal the official ones (the manifests prove it), so conversion only peels the
wrappers the official trainers add: DataParallel's ``module.``, torchcv's ``net.`` (ANN) and
``{'state_dict'|'model': ...}`` containers. ImageNet / DINO backbone files go through
:mod:`segrepro.models.pretrained` instead. Unlike the official ``strict=False`` loads, a file that does not
fill the model exactly is refused with one message listing the missing, unexpected and wrong-shape keys.
``num_batches_tracked`` is optional: inplace_abn v1.0 and old torch files do not store it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from segrepro.errors import UserError
from segrepro.io import atomic_path
from segrepro.models.pretrained import SOURCES, StateDict, check_keys, convert_for, read_state_dict, strip_prefix
from segrepro.models.registry import build, get_spec

WRAPPER_PREFIXES = ("module.", "net.")


@dataclass(frozen=True)
class ImportResult:
    """What was written: the model it fits and how many tensors it holds."""

    method: str
    variant: str
    dst: Path
    num_tensors: int
    backbone_only: bool


def unwrap(sd: StateDict) -> StateDict:
    """Strip ``module.`` / ``net.`` wrapper prefixes (in any nesting order) shared by every key."""
    while True:
        stripped = sd
        for prefix in WRAPPER_PREFIXES:
            stripped = strip_prefix(stripped, prefix)
        if stripped.keys() == sd.keys():
            return stripped
        sd = stripped


def _aliases(model: nn.Module) -> list[tuple[str, str]]:
    """Pairs of state_dict names that share one tensor (ANN's APNB f_query ≡ f_key)."""
    first: dict[tuple[int, int], str] = {}
    pairs = []
    for k, v in model.state_dict(keep_vars=False).items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if key is None:
            continue
        if key in first:
            pairs.append((first[key], k))
        else:
            first[key] = k
    return pairs


def load_official(model: nn.Module, sd: StateDict, what: str) -> nn.Module:
    """Load an unwrapped official state_dict strictly (``num_batches_tracked`` optional)."""
    target = model.state_dict()
    check_keys(sd, target, f"{what} does not match {type(model).__name__}", optional_nbt=True)
    differing = [f"{a} vs {b}" for a, b in _aliases(model) if not torch.equal(sd[a], sd[b])]
    if differing:
        raise UserError(f"{what}: tensors the model shares differ in the file: {', '.join(differing)}")
    full = {k: sd.get(k, v) for k, v in target.items()}
    model.load_state_dict(full, strict=True)
    return model


def import_checkpoint(
    method: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    variant: str | None = None,
    num_classes: int | None = None,
    backbone: str | None = None,
) -> ImportResult:
    """Convert the official file ``src`` for ``method``/``variant`` into a plain state_dict at ``dst``.

    With ``backbone`` (a :data:`~segrepro.models.pretrained.SOURCES` name) ``src`` is an ImageNet/DINO
    backbone file; ``dst`` then holds only the backbone tensors under the model's names, and can be passed
    as ``pretrained=`` to :func:`segrepro.models.build`. ``dst`` is only written when everything fits.
    """
    spec = get_spec(method, variant)
    src = Path(src)
    if not src.is_file():
        raise UserError(f"checkpoint not found: {src}")
    model = build(spec.method, num_classes=num_classes, variant=spec.variant)
    sd = unwrap(read_state_dict(src))
    if backbone is not None:
        if backbone not in SOURCES:
            raise UserError(f"unknown backbone source {backbone!r}; choose one of: {', '.join(SOURCES)}")
        out = convert_for(model, sd, backbone, src)
    else:
        hint = " (it looks like an ImageNet backbone file: pass --backbone)" if "fc.weight" in sd else ""
        try:
            load_official(model, sd, str(src))
        except UserError as err:
            raise UserError(f"{err}{hint}") from err
        out = model.state_dict()
    write_state_dict(out, dst)
    return ImportResult(spec.method, spec.variant, Path(dst), len(out), backbone is not None)


def export_state_dict(sd: StateDict, prefix: str = "", container: str | None = None) -> dict:
    """Our state_dict in an official file's shape: names unchanged plus ``prefix`` (e.g. ``module.``)."""
    out = {prefix + k: v for k, v in sd.items()}
    return {container: out} if container else out


def write_state_dict(sd: StateDict | dict, dst: str | os.PathLike[str]) -> None:
    """Save with ``torch.save`` through a temp file + rename, detached from any model."""
    plain = {k: (v.detach().clone() if isinstance(v, Tensor) else v) for k, v in sd.items()}
    with atomic_path(dst) as tmp:
        torch.save(plain, tmp)


def export_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    prefix: str = "module.",
    container: str | None = "state_dict",
) -> int:
    """Write our plain state_dict ``src`` as an official-style file; returns the number of tensors."""
    sd = unwrap(read_state_dict(src))
    write_state_dict(export_state_dict(sd, prefix, container), dst)
    return len(sd)
