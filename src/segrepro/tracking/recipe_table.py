"""``segrepro recipes``: one row per (method, recipe) with its dataset, split, protocol and paper number.

Every published number lives in its recipe's ``paper:`` block in params.yaml (``docs/recipes.md`` says which
file each value came from); results no recipe can reproduce are listed under ``unsupported:`` with the
reason. A CPU twin ``demo_<suffix>`` names its official recipe with ``twin_of`` (``demo`` is the twin of
``official``). Recipes are merged with the resolver's own :func:`~segrepro.engine.config.merge_chain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segrepro.engine.config import merge_chain

JSON_KEYS = ("method", "recipe", "dataset", "split", "protocol", "paper_mIoU", "paper_split", "source")


def twin_name(name: str, recipes: Mapping[str, Any]) -> str | None:
    """The CPU twin of an official recipe: ``official_<s>`` → ``demo_<s>``, ``official`` → ``demo``."""
    if not name.startswith("official"):
        return None
    twin = "demo" + name[len("official") :]
    return twin if twin in recipes else None


def describe_protocol(method: str, cfg: Mapping[str, Any], split: str) -> str:
    """The recipe's own protocol for ``split`` (its ``eval`` entry), else the method's official one."""
    from segrepro.models.registry import get_card

    entry = (cfg.get("eval") or {}).get(split)
    if not entry:
        return f"{split}: {get_card(method).protocol(split).describe().removeprefix('official: ')}"
    window = f"sliding {entry['crop']}" if entry.get("crop") else "whole image"
    if entry.get("resize"):
        window += f", short side {entry['resize'][0]} (long ≤ {entry['resize'][1]})"
    scales = "/".join(f"{s:g}" for s in entry.get("scales", [1.0]))
    return f"{split}: {window}, scales {scales}{' + flip' if entry.get('flip') else ''}"


def eval_split(cfg: Mapping[str, Any]) -> str:
    """The split the recipe's number is on: its paper's split, else the first split it defines a protocol for."""
    paper = cfg.get("paper") or {}
    return str(paper.get("split") or next(iter(cfg.get("eval") or {}), None) or cfg.get("val_split", "val"))


def recipe_rows(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every (method, recipe) of params.yaml, then every ``unsupported`` entry (with ``unsupported``: reason)."""
    rows: list[dict[str, Any]] = []
    for method, recipes in (params.get("recipes") or {}).items():
        for name in recipes:
            cfg = merge_chain(recipes, method, name)
            paper = cfg.get("paper") or {}
            twin_of = cfg.get("twin_of") or ("official" if name == "demo" else None)
            if twin_of and not paper:
                paper = merge_chain(recipes, method, twin_of).get("paper") or {}
            split = eval_split(cfg)
            rows.append(
                {
                    "method": method,
                    "recipe": name,
                    "dataset": cfg.get("dataset"),
                    "train_split": cfg.get("train_split", "train"),
                    "split": split,
                    "protocol": describe_protocol(method, cfg, split),
                    "variant": cfg.get("variant"),
                    "paper_mIoU": paper.get("mIoU"),
                    "paper_range": paper.get("range"),
                    "paper_split": paper.get("split"),
                    "paper_protocol": paper.get("protocol"),
                    "source": paper.get("source"),
                    "init_from": cfg.get("init_from"),
                    "cpu_twin": twin_name(name, recipes),
                    "twin_of": twin_of,
                }
            )
    for entry in params.get("unsupported") or []:
        paper = entry.get("paper") or {}
        rows.append(
            {
                "method": entry["method"],
                "recipe": entry["recipe"],
                "dataset": entry.get("dataset"),
                "split": paper.get("split"),
                "protocol": paper.get("protocol"),
                "paper_mIoU": paper.get("mIoU"),
                "paper_split": paper.get("split"),
                "paper_protocol": paper.get("protocol"),
                "source": paper.get("source"),
                "unsupported": entry["reason"],
            }
        )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The human table: method/recipe, dataset/split, paper number, twin or the reason it is unsupported."""
    lines = []
    for r in rows:
        number = "—" if r.get("paper_mIoU") is None else f"{r['paper_mIoU']:g}"
        if r.get("paper_range"):
            number = "–".join(f"{v:g}" for v in r["paper_range"])
        paper = (
            f"paper {number} ({r['paper_split']}; {r['source']})"
            if r.get("paper_mIoU") is not None
            else "no paper number"
        )
        if r.get("twin_of"):
            paper += f" [CPU twin of {r['twin_of']}]"
        tail = f"UNSUPPORTED: {r['unsupported']}" if r.get("unsupported") else f"twin: {r.get('cpu_twin') or '—'}"
        lines.append(
            f"{r['method']}/{r['recipe']}  {r['dataset']} {r['split']}  |  {r['protocol']}  |  {paper}  |  {tail}"
        )
    return "\n".join(lines)
