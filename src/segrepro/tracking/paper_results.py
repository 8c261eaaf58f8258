"""Published mIoU numbers for the leaderboard, read from the recipes' ``paper:`` blocks in params.yaml.

Keyed by (method, recipe). A CPU twin (``demo_<suffix>``) carries its official twin's number for reference.
A Δ is only meaningful like for like: :func:`no_delta_reason` says why a row gets none (synthetic twin,
another split, another protocol, a test-server number), so the leaderboard never compares unlike things.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PaperResult:
    miou: float  # percent (the lower end of a published range)
    split: str
    protocol: str
    source: str
    twin_of: str | None = None  # set on a CPU twin: the official recipe whose number this is


def paper_index(params: Mapping[str, Any]) -> dict[tuple[str, str], PaperResult]:
    """(method, recipe) → its paper number, for every recipe that has one (twins: their official twin's)."""
    from segrepro.tracking.recipe_table import recipe_rows

    return {
        (r["method"], r["recipe"]): PaperResult(
            float(r["paper_mIoU"]), str(r["paper_split"]), str(r["paper_protocol"]), str(r["source"]), r.get("twin_of")
        )
        for r in recipe_rows(params)
        if r.get("paper_mIoU") is not None and not r.get("unsupported")
    }


def load_paper_index(params_path: Path) -> dict[tuple[str, str], PaperResult]:
    from segrepro.engine.config import load_params

    return paper_index(load_params(params_path)) if Path(params_path).is_file() else {}


def no_delta_reason(paper: PaperResult, split: str, protocol: str, synthetic: bool, archive: str = "") -> str:
    """Empty when our number compares with the paper's (same split, the official protocol, real data)."""
    if synthetic:
        return f"no Δ: synthetic stand-in (CPU twin of {paper.twin_of or 'the official recipe'})"
    if paper.split == "test":
        where = f"upload {archive}" if archive else "build its archive with `segrepro submit build`"
        return f"no Δ: paper is Cityscapes test; the score comes from the evaluation server ({where})"
    if split != paper.split:
        return f"no Δ: evaluated on {split or '?'}, paper on {paper.split}"
    if not protocol.startswith("official"):
        return f"no Δ: protocol '{protocol.split(':')[0]}' is not the paper's ({paper.protocol})"
    return ""


def paper_label(recipe: str, variant: str | None) -> str:
    """The text of the paper column when there is no number for this recipe."""
    if recipe.startswith("demo") or variant == "tiny":
        return "n/a (synthetic)"
    return "n/a (not reported for this recipe)"
