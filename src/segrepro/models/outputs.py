"""The uniform forward contract every registered model follows.

Official code bases disagree on what ``forward`` returns (ANN returns aux first, ACFNet fuses two
outputs at eval, strides are 4, 8 or already the input size). Each method adapts its own convention
into :class:`SegOutput` in exactly one place, so the engine and evaluation treat all methods alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class SegOutput:
    """Main logits plus named auxiliary outputs, each with its stride relative to the input.

    ``main``: (N, C, h, w) logits used for prediction (already fused where the official eval fuses).
    ``stride``: input size / ``main`` size (1 when the official model already upsamples).
    ``aux``: auxiliary logits by name (e.g. ``"dsn"``, ``"coarse"``), in train and eval mode.
    ``aux_strides``: the stride of each auxiliary output.
    ``extras``: non-logit tensors a loss may need (e.g. attention maps), by name.
    """

    main: Tensor
    stride: int
    aux: dict[str, Tensor] = field(default_factory=dict)
    aux_strides: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)
