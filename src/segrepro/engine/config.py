"""Recipes from params.yaml: resolve one method's training config and apply ``--set`` overrides.

params.yaml keeps the official recipes under ``recipes.<method>.<name>`` (facts from the reference specs)
and the active choice plus local overrides under ``train.<method>`` (``recipe: official`` and, e.g.,
``lr: 0.005``). A DVC stage that reads ``train.<method>`` and ``recipes.<method>`` therefore reruns only
when that method's settings change. ``--set train.ann.lr=0.005`` edits the same tree before resolving;
:func:`resolve_recipe` returns the validated :class:`~segrepro.engine.recipe.Recipe`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from segrepro.errors import UserError

if TYPE_CHECKING:
    from segrepro.engine.recipe import Recipe

CREDENTIAL_HINTS = ("secret", "password", "token", "access_key", "credential", "api_key")


def load_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(params: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML scalars/lists) to a copy of ``params``."""
    params = copy.deepcopy(params)
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.ann.lr=0.005")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UserError(f"--set {item!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return params


NOT_INHERITED = ("paper", "twin_of")  # a published number belongs to the recipe that states it, not to its children

# Recipe defaults as plain values: the schema (engine.recipe) fills an absent key from these, and so does
# the GPU check, whose image has no pydantic (segrepro.gpu_check).
PAPER_GPUS = 1  # ``gpus`` when a recipe does not say: per_gpu_batch defaults to batch_size / gpus
LOSS_TERM_WEIGHT = 1.0
OHEM_DEFAULTS: dict[str, Any] = {"thresh": 0.7, "min_kept": 100_000, "rule": "gald"}
# Optimiser defaults: for every recipe ("all"), then those of the optimiser or the objective (poly vs step).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "all": {"weight_decay": 5.0e-4, "head_lr_mult": 1.0},
    "sgd": {"momentum": 0.9, "nesterov": False},
    "supervised": {"poly_power": 0.9},
    "self_supervised": {"step_epochs": 3, "gamma": 0.5},
}


def optimizer_defaults(optimizer: Mapping[str, Any], objective: str) -> dict[str, Any]:
    """``optimizer`` with the defaults of its name and of the objective filled in (a given key wins)."""
    out = dict(optimizer)
    for group in ("all", str(out.get("name", "sgd")), objective):
        for key, value in OPTIMIZER_DEFAULTS.get(group, {}).items():
            out.setdefault(key, value)
    return out


def micro_batch(batch_size: int, gpus: int, per_gpu_batch: int | None) -> int:
    """Images per process and step, before capping by the world size: ``per_gpu_batch``, else the paper's
    global batch split over its GPUs."""
    return per_gpu_batch or batch_size // gpus


def merge_chain(recipes: Mapping[str, Any], method: str, name: str) -> dict[str, Any]:
    """Recipe ``name`` merged over its ``extends`` chain (any depth; a cycle or unknown parent is one error).
    :data:`NOT_INHERITED` keys come from ``name`` itself only."""
    chain: list[Mapping[str, Any]] = []
    seen: list[str] = []
    current: str | None = name
    while current is not None:
        if current in seen:
            raise UserError(f"recipes.{method}: extends cycle {' → '.join([*seen, current])}; break the chain")
        if current not in recipes:
            where = f"recipes.{method}.{seen[-1]}.extends" if seen else f"recipes.{method}"
            raise UserError(f"{where}: unknown recipe {current!r} (known: {', '.join(recipes) or 'none'})")
        seen.append(current)
        chain.append(recipes[current] or {})
        current = chain[-1].get("extends")
    merged: dict[str, Any] = {}
    for depth, layer in reversed(list(enumerate(chain))):
        skip = ("extends", *NOT_INHERITED) if depth else ("extends",)
        merged = deep_merge(merged, {k: v for k, v in layer.items() if k not in skip})
    return merged


def resolve_recipe(params: Mapping[str, Any], method: str, recipe: str | None = None) -> Recipe:
    """The validated training recipe of ``method`` (see :mod:`segrepro.engine.recipe`)."""
    from segrepro.engine.recipe import resolve

    return resolve(params, method, recipe)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, leaving out anything that looks like a credential."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if any(h in str(key).lower() for h in CREDENTIAL_HINTS):
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
