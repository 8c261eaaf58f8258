"""AlignSeg: Feature-Aligned Segmentation Networks (Huang et al., TPAMI 2021), supervised.

Key-for-key with ``speedinghzl/AlignSeg`` ``networks/alignseg.py`` (``Seg_Model``; reference/alignseg.md).
Not the self-supervised AlignSeg (``alignseg_ssl``), which only shares the name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import partial

from torch import Tensor, nn

from segrepro.data.transforms import ScaleChoices, TrainAugment
from segrepro.models.alignseg_blocks import CAB, CAM, RRB
from segrepro.models.backbones.resnet import DEPTHS, ResNet
from segrepro.models.card import MethodCard, Protocol
from segrepro.models.norm import InPlaceABN
from segrepro.models.outputs import Outputs, SegOutput, wants
from segrepro.models.registry import register, register_card

#: BGR channel means (0–255) subtracted by the official loaders; there is no std division.
BGR_MEAN: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)
OUTPUT_STRIDE = 4
# ``build(..., pretrained=)`` file layout: the README's MIT/CSAIL deep-stem ``resnet101-imagenet.pth``.
PRETRAINED_SOURCE = "mit"


def _classifier(channels: int, num_classes: int) -> nn.Sequential:
    """``dsn`` / ``head``: conv3×3 (+bias) → ABN → Dropout2d(0.1) → conv1×1 (+bias); keys ``.0/.1/.3``."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        InPlaceABN(channels),
        nn.Dropout2d(0.1),
        nn.Conv2d(channels, num_classes, 1),
    )


class AlignSeg(ResNet):
    """Deep-stem ResNet (output stride 32, no dilation) with the AlignSeg decoder at stride 4.

    Input: BGR, 0–255, minus :data:`BGR_MEAN`, no std division (official loaders).

    Output (train and eval, as the official ``[out, dsn]``): ``main = head(d5)`` and ``aux["dsn"] =
    dsn(d3)``, both logits at stride 4, not upsampled (``dsn`` only when ``outputs`` asks for it). The
    backbone norm is InPlaceABN ``identity`` + explicit ReLU; the head uses InPlaceABN with leaky ReLU 0.01
    (scale ``|γ|+eps`` everywhere).

    Offset normalisation: by default the warp divides Δx by the sampled map's width and Δy by its
    height, as HEAD ``forward`` does (and the fixture). The released checkpoints came from the initial
    release, which divided by ``(H, W)`` in swapped order, but they were trained on square 872² crops
    and evaluated on square 872² tiles, where both orders agree, so HEAD order reproduces them under
    the official sliding-window protocol. ``legacy_offset_order=True`` restores the initial-release
    order for exact parity on non-square (whole-image) inference with those checkpoints. The
    ``align_corners=True`` "gridsample2" variant is dead code in the official ``forward`` and is not
    offered.

    Official quirks, fixed or documented instead of copied:

    * ``--ohem 1`` is CE + 0.8·Lovász-softmax + 0.1·aux CE: there is no OHEM (the engine names the loss
      for what it is); the aux weight is 0.1, not the usual 0.4.
    * The README (``resnet101-imagenet.pth``), ``run_local.sh`` (``CS_scenes_init.pth``, never shipped)
      and ``train.py`` (``MS_DeepLab_resnet_pretrained_init.pth``) name three different pretrained
      files, all loaded with ``strict=False`` so a wrong file fails silently. We take the README's
      MIT/CSAIL deep-stem file and load it strictly through :mod:`segrepro.models.pretrained`.
    * The last conv of every ``delta_gen`` is zero-initialised here, as the official ``__init__`` does.
    """

    def __init__(
        self,
        num_classes: int = 19,
        layers: Sequence[int] = DEPTHS[101],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (64, 64, 128),
        channels: int = 256,
        legacy_offset_order: bool = False,
    ) -> None:
        super().__init__(
            layers,
            stem="split",
            dilation="none",
            norm=partial(InPlaceABN, activation="identity"),
            widths=widths,
            stem_widths=stem_widths,
        )
        c1, c2, c3, c4 = self.out_channels
        self.legacy_offset_order = legacy_offset_order
        # Registration order = the official state_dict order (CAM, stage 5 down to 1, dsn, head).
        self.CAM = CAM(c4, channels, legacy_offset_order)
        for stage, cin in ((5, channels), (4, c4), (3, c3), (2, c2)):
            self.add_module(f"RRB{stage}a", RRB(cin, channels))
            self.add_module(f"CAB{stage}", CAB(channels, legacy_offset_order))
            self.add_module(f"RRB{stage}b", RRB(channels, channels))
        self.RRB1a = RRB(c1, channels)
        self.dsn = _classifier(channels, num_classes)
        self.head = _classifier(channels, num_classes)

    def _fuse(self, stage: int, low: Tensor, high: Tensor) -> Tensor:
        """``RRBb(CAB(low, RRBa(high)))``: align a coarser stage onto the stride-4 decoder map."""
        high = getattr(self, f"RRB{stage}a")(high)
        return getattr(self, f"RRB{stage}b")(getattr(self, f"CAB{stage}")(low, high))

    def forward(self, x: Tensor, outputs: Outputs = None) -> SegOutput:  # type: ignore[override]
        x1, x2, x3, x4 = self.forward_stages(x)
        d2 = self._fuse(2, self.RRB1a(x1), x2)
        d3 = self._fuse(3, d2, x3)
        d4 = self._fuse(4, d3, x4)
        d5 = self._fuse(5, d4, self.CAM(x4))
        main = self.head(d5)
        # The official ``[out, dsn]`` list becomes the uniform contract here, and only here.
        if not wants(outputs, "dsn"):
            return SegOutput(main=main, stride=OUTPUT_STRIDE)
        return SegOutput(
            main=main,
            stride=OUTPUT_STRIDE,
            aux={"dsn": self.dsn(d3)},
            aux_strides={"dsn": OUTPUT_STRIDE},
        )


#: The four AlignFA modules, coarse to fine, as their offsets are shown in the paper's figure.
ALIGNFA_MODULES: tuple[str, ...] = ("CAB5", "CAB4", "CAB3", "CAB2")


@contextlib.contextmanager
def record_offsets(model: AlignSeg) -> Iterator[dict[str, dict[str, Tensor]]]:
    """Record the learned offsets of every AlignFA module during the forwards run inside the block.

    The hook: a standard forward hook on each ``CAB*.delta_gen1`` / ``delta_gen2`` stores that module's
    output, which is the offset field Δ (n, 2, h, w) ``offset_warp`` receives (channel 0 = x, in half-pixels
    of the sampled map). ``"A"`` is Δ1, which warps the upsampled coarse map, and ``"F"`` is Δ2, which warps
    the fine map. Nothing in the model changes (outputs, state_dict); the hooks go when the block ends.
    """
    record: dict[str, dict[str, Tensor]] = {name: {} for name in ALIGNFA_MODULES}
    handles = []
    for name in ALIGNFA_MODULES:
        cab = getattr(model, name)
        for key, gen in (("A", cab.delta_gen1), ("F", cab.delta_gen2)):

            def store(_module: nn.Module, _inputs: object, output: Tensor, name: str = name, key: str = key) -> None:
                record[name][key] = output.detach()

            handles.append(gen.register_forward_hook(store))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


@register(
    "alignseg",
    "r101",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    num_classes=19,
    description="official: ResNet-101 deep stem, output stride 32, RRB/CAB/CAM decoder at stride 4",
)
def build_alignseg_r101(num_classes: int = 19, legacy_offset_order: bool = False) -> AlignSeg:
    """The official ``Seg_Model(num_classes)``."""
    return AlignSeg(num_classes, DEPTHS[101], legacy_offset_order=legacy_offset_order)


@register(
    "alignseg",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    num_classes=19,
    description="same head, 1-block stages of width 8..64, 32 head channels",
)
def build_alignseg_tiny(num_classes: int = 19, legacy_offset_order: bool = False) -> AlignSeg:
    """A small model with the official head structure, for fast tests and smoke runs."""
    return AlignSeg(
        num_classes,
        (1, 1, 1, 1),
        widths=(8, 16, 32, 64),
        stem_widths=(8, 8, 16),
        channels=32,
        legacy_offset_order=legacy_offset_order,
    )


# reference README "crop / scale aug" and "eval protocol": 872² crops, scales 0.7 + randint(0, 14)/10, flip;
# BGR Caffe means; val sliding 872 with 1/3 overlap (stride 582).
register_card(
    MethodCard(
        "alignseg",
        "supervised",
        "caffe_bgr",
        TrainAugment((872, 872), ScaleChoices(0.7, 2.1, 0.1)),
        {"val": Protocol("official", crop=872)},
        outputs=("main", "dsn"),
        head_prefixes=("CAM", "RRB", "CAB", "dsn", "head"),
    )
)
