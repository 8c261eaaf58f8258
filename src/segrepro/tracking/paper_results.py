"""Published mIoU numbers, each with where it comes from (the reference specs' "Reported numbers").

Keyed by (method, recipe): a number is only comparable with a run of the recipe that reproduces its
training and protocol. Anything else (the demo recipe on synthetic data, unofficial recipes) gets a
"n/a" label instead of a number, so the leaderboard never invents a target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    miou: float  # percent
    split: str
    protocol: str
    source: str


PAPER_RESULTS: dict[tuple[str, str], PaperResult] = {
    ("alignseg", "official"): PaperResult(
        81.4, "val", "single scale, sliding 872", "speedinghzl/AlignSeg README (CE + 0.8·Lovász, 'OHEM')"),
    ("alignseg", "official_ce"): PaperResult(
        80.3, "val", "single scale, sliding 872", "speedinghzl/AlignSeg README (no 'OHEM')"),
    ("acfnet", "official"): PaperResult(
        81.85, "test", "fine only, protocol not stated", "ACFNet paper abstract (the unofficial repo reports none)"),
    ("gald", "official"): PaperResult(
        81.8, "test (probably)", "fine only, protocol not stated", "lxtGH/GALD-DGCNet README table (ResNet-101)"),
    ("dgcnet", "official"): PaperResult(
        80.3, "val (presumably)", "single scale, sliding 832", "lxtGH/GALD-DGCNet README, R101 scripts (80.3–80.4)"),
    ("ann", "official"): PaperResult(
        79.9, "val", "single scale, whole image", "MendelXu/ANN README (released checkpoint, ss_test)"),
    ("alignseg_ssl", "official"): PaperResult(
        69.5, "PVOC val", "per-image GT-matched mIoU at 100×100", "yliu1229/AlignSeg README (ViT-S/16)"),
}

def paper_result(method: str, recipe: str) -> PaperResult | None:
    return PAPER_RESULTS.get((method, recipe))


def paper_label(method: str, recipe: str, variant: str | None) -> str:
    """The text of the paper column when there is no comparable number."""
    if recipe == "demo" or variant == "tiny":
        return "n/a (synthetic)"
    return "n/a (not reported for this recipe)"


def spec_reference(method: str) -> str:
    """The reference spec that quotes the number ("Reported numbers" section; alignseg_ssl: its header)."""
    return f"reference/{method}.md"
