"""The uniform forward contract every registered model follows.

Official code bases disagree on what ``forward`` returns (ANN returns aux first, ACFNet fuses two
outputs at eval, strides are 4, 8 or already the input size). Each method adapts its own convention
into :class:`SegOutput` in exactly one place, so the engine and evaluation treat all methods alike.

``forward(x, outputs=None)``: ``outputs`` names the outputs the caller needs (the card's names).
``None`` asks for every output (training, fixtures); :data:`MAIN_ONLY` for the main logits alone, which
evaluation, prediction, quick validation and ``segrepro bench models`` ask for, so a model skips the
heads only its aux outputs need (ANN's and AlignSeg's ``dsn``, ACFNet's ``fcn``). ``main`` is the same
either way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from torch import Tensor, nn

Outputs = Collection[str] | None
MAIN_ONLY: tuple[str, ...] = ("main",)


def wants(outputs: Outputs, name: str) -> bool:
    """Whether a forward asked for ``outputs`` has to compute the output ``name``."""
    return outputs is None or name in outputs


def main_logits(model: nn.Module, x: Tensor) -> Tensor:
    """``model``'s main output for ``x``, without computing its auxiliary heads."""
    return model(x, outputs=MAIN_ONLY).main


@dataclass
class SegOutput:
    """Main logits plus named auxiliary outputs, each with its stride relative to the input.

    ``main``: (N, C, h, w) logits used for prediction (already fused where the official eval fuses).
    ``stride``: input size / ``main`` size (1 when the official model already upsamples).
    ``aux``: auxiliary logits by name (e.g. ``"dsn"``, ``"coarse"``), in train and eval mode, the ones
    the forward's ``outputs`` asked for.
    ``aux_strides``: the stride of each auxiliary output.
    ``extras``: non-logit tensors a loss may need (e.g. attention maps), by name.
    """

    main: Tensor
    stride: int
    aux: dict[str, Tensor] = field(default_factory=dict)
    aux_strides: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)
