"""Pretrained ImageNet / DINO backbone files: read from a local path, convert keys, verify every key.

The official code bases load these files with ``strict=False`` (or rename keys by hand), so a wrong
file fails silently: the GALD-R101 script restores an R50 file (layer3 blocks 6–22 stay random), ACFNet's
ECA convs stay random, a 7×7-stem file loads nothing. Here a file either fills **every** backbone tensor
of the model with the right shape, or loading stops with one error that says why. Nothing is downloaded
and nothing is left at random init.

Files are read with ``torch.load(weights_only=True)``. Stem layouts are detected from the file's keys
(split ``conv1..3/bn1..3`` = MIT/CSAIL, sequential ``conv1.{0,1,3,4,6}`` + ``bn1`` = GALD deep, or
``prefix.*`` = ANN) and converted to the model's layout, so either deep-stem file fits any method.
Weights are copied as stored: an InPlaceABN backbone (AlignSeg, ACFNet) scales by ``|γ|+eps`` exactly as
the official code does when it loads the same BatchNorm-trained file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from segrepro.errors import MissingWeightsError, UserError
from segrepro.models.backbones.resnet import DEPTHS, ResNet

StateDict = dict[str, Tensor]

# Top-level child names a ResNet creates; anything else on a ResNet subclass belongs to the head.
RESNET_CHILDREN = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "prefix", "layer1", "layer2", "layer3", "layer4")
# split (canonical) stem name <-> sequential (GALD) stem name; the ANN layout only adds "prefix.".
_SPLIT_TO_SEQ = {
    "conv1": "conv1.0",
    "bn1": "conv1.1",
    "conv2": "conv1.3",
    "bn2": "conv1.4",
    "conv3": "conv1.6",
    "bn3": "bn1",
}
_STEM_RE = re.compile(r"^(conv[123]|bn[123])\.")
_SEQ_STEM_RE = re.compile(r"^(conv1\.[01346]|bn1)\.(.+)$")
_DROP_RE = re.compile(r"^(fc|head|classifier)\.")
WRAPPER_KEYS = ("state_dict", "model", "teacher", "student")


@dataclass(frozen=True)
class Source:
    """Where a pretrained file comes from, for the error messages (``{depth}`` is 50 or 101)."""

    filename: str
    what: str
    where: str


SOURCES: dict[str, Source] = {
    "mit": Source(
        "resnet{depth}-imagenet.pth",
        "MIT/CSAIL deep-stem ImageNet ResNet-{depth} (AlignSeg, ACFNet's run_local.sh; "
        "ANN calls it 3x3resnet{depth}-imagenet.pth)",
        "http://sceneparsing.csail.mit.edu/model/pretrained_resnet/resnet{depth}-imagenet.pth",
    ),
    "gald-deep": Source(
        "resnet{depth}-deep.pth",
        "deep-stem ImageNet ResNet-{depth} in the GALD layout (conv1.0/1/3/4/6 + bn1)",
        "the download links in the lxtGH/GALD-DGCNet README",
    ),
    "eca": Source(
        "eca-resnet{depth}-deepstem.pth",
        "deep-stem ECA-ResNet-{depth} (k=3) ImageNet weights including every eca.conv",
        "no public file has this layout (BangguWu/ECANet's eca_resnet has a 7x7 stem); convert or train one",
    ),
    "dino": Source(
        "dino_deitsmall16_pretrain.pth",
        "DINO ViT-S/16 backbone (the alignseg_ssl configs call it dino_vitsmall16.pth)",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
    ),
}


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read a tensor dict safely, unwrapping ``{'state_dict'|'model'|...: ...}`` and DataParallel ``module.``."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, or pickled objects beyond plain tensors
        raise UserError(f"cannot read {path} as a torch state_dict (weights_only=True): {err}") from err
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise UserError(f"{path} holds no state_dict (top-level keys: {', '.join(map(str, list(obj)[:10]))})")
        obj = inner
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return strip_prefix(obj, "module.")


def _is_tensor_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def strip_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Remove ``prefix`` where *every* key has it (a wrapper), else leave the dict unchanged."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return dict(sd)


def format_key_problems(
    missing: dict[str, tuple[int, ...]],
    unexpected: dict[str, tuple[int, ...]],
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    limit: int = 12,
) -> str:
    """One message listing missing / unexpected / wrong-shape keys with shapes (first ``limit`` of each)."""
    parts = []
    for title, items in (
        ("missing", [f"{k} {list(s)}" for k, s in missing.items()]),
        ("unexpected", [f"{k} {list(s)}" for k, s in unexpected.items()]),
        ("wrong shape", [f"{k} file {list(a)} vs model {list(b)}" for k, (a, b) in mismatched.items()]),
    ):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {title}: " + ", ".join(items[:limit]) + more)
    return "; ".join(parts)


def backbone_state(model: nn.Module) -> tuple[str, StateDict]:
    """(key prefix, backbone tensors) of ``model``: a ResNet subclass's own children, or ``model.backbone``."""
    if isinstance(model, ResNet):
        sd = model.state_dict()
        return "", {k: v for k, v in sd.items() if k.split(".", 1)[0] in RESNET_CHILDREN}
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        return "backbone.", dict(backbone.state_dict())
    raise UserError(f"{type(model).__name__} has no ResNet backbone or .backbone to load pretrained weights into")


def resnet_depth(sd: StateDict) -> tuple[int, ...]:
    """Blocks per stage found in a ResNet state_dict (e.g. (3, 4, 23, 3))."""
    counts = [0, 0, 0, 0]
    for k in sd:
        m = re.match(r"^(?:.*\.)?layer([1-4])\.(\d+)\.", k)
        if m:
            counts[int(m[1]) - 1] = max(counts[int(m[1]) - 1], int(m[2]) + 1)
    return tuple(counts)


def _depth_name(blocks: tuple[int, ...]) -> str:
    named = {v: k for k, v in DEPTHS.items()}
    return f"ResNet-{named[blocks]}" if blocks in named else f"ResNet with blocks {blocks}"


def to_split_stem(sd: StateDict) -> StateDict:
    """Convert a file in any of the three deep-stem layouts to the split layout (``conv1..3/bn1..3``)."""
    sd = strip_prefix(sd, "backbone.")
    if any(k.startswith("prefix.") for k in sd):
        return {k[len("prefix.") :] if k.startswith("prefix.") else k: v for k, v in sd.items()}
    if "conv1.0.weight" in sd:
        seq_to_split = {s: p for p, s in _SPLIT_TO_SEQ.items()}
        out = {}
        for k, v in sd.items():
            m = _SEQ_STEM_RE.match(k)
            out[f"{seq_to_split[m[1]]}.{m[2]}" if m else k] = v
        return out
    return dict(sd)


def from_split_stem(sd: StateDict, layout: str) -> StateDict:
    """Rename split-layout stem keys to ``layout`` ("split", "sequential" or "prefix")."""
    if layout == "split":
        return dict(sd)
    out = {}
    for k, v in sd.items():
        m = _STEM_RE.match(k)
        if m is None:
            out[k] = v
        elif layout == "prefix":
            out[f"prefix.{k}"] = v
        else:
            out[_SPLIT_TO_SEQ[m[1]] + k[len(m[1]) :]] = v
    return out


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise UserError(f"unknown pretrained source {name!r}; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name]


def resolve_path(path: str | os.PathLike[str], source: str, depth: int | None = None) -> Path:
    """The file to read: ``path`` itself, or the source's standard file name inside a folder ``path``."""
    src = _source(source)
    fmt = {"depth": depth if depth is not None else 101}
    p = Path(path)
    if p.is_dir():
        p = p / src.filename.format(**fmt)
    if not p.is_file():
        raise MissingWeightsError(
            f"pretrained backbone file not found: {p}. Needed: {src.filename.format(**fmt)}, the "
            f"{src.what.format(**fmt)}; get it from {src.where.format(**fmt)} and put it at {p} "
            f"(or into a pretrained/ folder in the project and pass that folder). Nothing is downloaded."
        )
    return p


def convert_for(model: nn.Module, sd: StateDict, source: str, file: str | os.PathLike[str] = "<file>") -> StateDict:
    """Convert a pretrained file's tensors to ``model``'s full backbone key names, or refuse with the reason."""
    _source(source)
    prefix, target = backbone_state(model)
    sd = {k: v for k, v in sd.items() if not _DROP_RE.match(k)}  # ImageNet classifier / DINO projection head
    if source == "dino":
        sd = strip_prefix(strip_prefix(sd, "model."), "backbone.")
    else:
        _refuse_wrong_resnet(model, sd, target, file)
        sd = from_split_stem(to_split_stem(sd), getattr(_resnet_of(model), "stem_layout", "split"))
    converted = {prefix + k: v for k, v in sd.items()}
    full_target = {prefix + k: v for k, v in target.items()}
    check_keys(converted, full_target, f"{file} does not fit the {type(model).__name__} backbone", optional_nbt=True)
    return converted


def _resnet_of(model: nn.Module) -> nn.Module:
    return model if isinstance(model, ResNet) else getattr(model, "backbone", model)


def _refuse_wrong_resnet(model: nn.Module, sd: StateDict, target: StateDict, file: str | os.PathLike[str]) -> None:
    """The silent mis-loads of the official loaders, each refused with its reason."""
    stem = sd.get("conv1.weight")
    if stem is not None and stem.dim() == 4 and stem.shape[-1] == 7:
        raise UserError(
            f"{file} has a 7x7 single-conv stem (torchvision/ECANet layout) and cannot fill the deep 3x3 stem "
            "of this backbone; the official ACFNet loader silently loads nothing from such a file. "
            "Use a deep-stem file (resnet101-imagenet.pth / resnet101-deep.pth)."
        )
    have, want = resnet_depth(sd), resnet_depth(target)
    if have != want and any(have):
        raise UserError(
            f"{file} is a {_depth_name(have)} but the model is a {_depth_name(want)}: depth mismatch. "
            "A strict=False load (the official GALD-R101 script restoring resnet50-deep.pth) would leave the "
            "extra blocks at random init; pass the file of the matching depth."
        )
    eca_keys = [k for k in target if ".eca.conv." in k]
    if eca_keys and not any(".eca.conv." in k for k in sd):
        raise UserError(
            f"{file} has no ECA weights but the model's ECA-ResNet has {len(eca_keys)} eca.conv tensors: the "
            "official ACFNet recipe (MIT resnet101-imagenet.pth) leaves them at random init, so the backbone is "
            "not really pretrained. Provide a deep-stem ECA-ResNet file with every eca.conv weight."
        )


def check_keys(sd: StateDict, target: StateDict, what: str, optional_nbt: bool = False) -> None:
    """Refuse unless ``sd`` has exactly ``target``'s keys with the same shapes (``num_batches_tracked`` optional)."""

    def shape(t: Tensor) -> tuple[int, ...]:
        return tuple(t.shape)

    skip = (lambda k: k.endswith("num_batches_tracked")) if optional_nbt else (lambda k: False)
    missing = {k: shape(v) for k, v in target.items() if k not in sd and not skip(k)}
    unexpected = {k: shape(v) for k, v in sd.items() if k not in target}
    mismatched = {
        k: (shape(v), shape(target[k])) for k, v in sd.items() if k in target and shape(v) != shape(target[k])
    }
    if missing or unexpected or mismatched:
        raise UserError(f"{what}: {format_key_problems(missing, unexpected, mismatched)}")


def load_backbone(model: nn.Module, path: str | os.PathLike[str], source: str) -> nn.Module:
    """Fill every backbone tensor of ``model`` from the local file ``path`` (or the standard name in folder ``path``).

    ``source`` is "mit", "gald-deep", "eca" or "dino" and picks the messages and key handling. Raises
    :class:`MissingWeightsError` when the file is absent and :class:`UserError` when it does not fit.
    """
    depth_blocks = resnet_depth(backbone_state(model)[1]) if source != "dino" else ()
    by_blocks: dict[tuple[int, ...], int] = {v: k for k, v in DEPTHS.items()}
    depth = by_blocks.get(depth_blocks)
    file = resolve_path(path, source, depth)
    converted = convert_for(model, read_state_dict(file), source, file)
    state = model.state_dict()
    with torch.no_grad():
        for k, v in converted.items():
            state[k].copy_(v.to(state[k].dtype))
    return model
