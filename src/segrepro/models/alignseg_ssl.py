"""Self-supervised AlignSeg (``yliu1229/AlignSeg``): a frozen DINO ViT-S/16 plus Q learnable class
queries aligned to each image by a one-layer transformer decoder; a patch's label is its most similar query.

Not the supervised ``speedinghzl/AlignSeg`` (``segrepro.models.alignseg``); they share only the name.
Spec: ``reference/alignseg_ssl.md``. State-dict names and order equal the official ``AlignSegmentor``
(``backbone.*`` = DINO's ViT keys, ``clsQueries.weight``, ``decoder_{cross_attention,self_attention,ffn}_layers.j``),
so released checkpoints load with ``strict=True``.

**Fixed official bug, crop pairing (spec §8.1).** The official forward concatenates the local crops
crop-major ([lc1 of images 0..B-1, lc2 of images 0..B-1]) and then reshapes them to (B, 2, M, C), so for
B > 1 "local crop k of image b" is chunk 2b+k, usually a crop of *another* image, while the foreground
masks stay correctly paired. We pair global crop b with the local crops of image b (``pairing="fixed"``,
the default). ``pairing="official"`` reproduces the released training behaviour (and the loss fixture).
Also fixed: the foreground hint no longer crashes when it removes components of ≤ 2 patches (§8.4).

Kept on purpose (they define the released checkpoints): every decoder layer restarts from ``clsQueries``,
so with L > 1 layers only the last one affects anything (COCO-27 ships 3 layers; layers 0..L-2 are dead
weights, not computed here because their result is discarded); no positional embeddings in the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.data.transforms import TrainAugment
from segrepro.errors import UserError
from segrepro.models.alignseg_ssl_blocks import CrossAttentionLayer, FFNLayer, SelfAttentionLayer, foreground_masks
from segrepro.models.backbones.vit import VisionTransformer, vit_small, vit_tiny
from segrepro.models.card import MethodCard, Protocol
from segrepro.models.outputs import Outputs, SegOutput
from segrepro.models.registry import register, register_card

PAIRINGS = ("fixed", "official")
# ``build(..., pretrained=)`` file layout: Facebook's DINO ViT-S/16 ``dino_deitsmall16_pretrain.pth``
# (the configs' ``dino_vitsmall16.pth``), loaded into ``backbone.*``.
PRETRAINED_SOURCE = "dino"


def l2n(t: Tensor) -> Tensor:
    """The official ``norm``: L2 over channels with eps 1e-10."""
    return F.normalize(t, dim=-1, eps=1e-10)


class AlignSegSSL(nn.Module):
    """Frozen ViT + class queries + decoder.

    Input: RGB with ImageNet mean/std normalisation; height and width divisible by the patch size
    (the official eval uses square 448×448).
    ``forward(x)`` with one tensor (B,3,H,W) (inference): ``main`` = cosine scores (B,Q,h,w) between each
    L2-normalised patch token and each aligned query, stride = patch size; labels = softmax over Q then
    argmax (see :func:`patch_labels`). ``extras``: ``tokens`` (B,h·w,C), ``queries`` (B,Q,C).
    ``forward([global, local_1, ..., local_K])`` (training; the local crops share one size, all 224 in the
    official configs): as above for the global crop, plus ``local_tokens`` (K,B,M,C), ``local_queries`` (K,B,Q,C)
    and the DINO-attention foreground masks ``fg`` (B,h·w) and ``local_fg`` (K,B,M) that
    :mod:`segrepro.engine.ssl_loss` uses.
    The backbone never receives gradient (run under ``no_grad``, parameters frozen). Official bugs fixed
    instead of copied: the crop pairing and the foreground-hint crash (module docstring).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_queries: int = 5,
        decoder_heads: int = 3,
        hidden_dim: int = 384,
        num_decode_layers: int = 1,
        pairing: str = "fixed",
    ) -> None:
        super().__init__()
        if pairing not in PAIRINGS:
            raise UserError(f"unknown crop pairing {pairing!r}; choose one of: {', '.join(PAIRINGS)}")
        self.pairing = pairing
        self.patch_size = backbone.patch_size
        dim = backbone.embed_dim
        self.backbone = backbone.requires_grad_(False)
        self.clsQueries = nn.Embedding(num_queries, dim)
        self.decoder_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, decoder_heads) for _ in range(num_decode_layers)
        )
        self.decoder_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, decoder_heads) for _ in range(num_decode_layers)
        )
        self.decoder_ffn_layers = nn.ModuleList(FFNLayer(dim, hidden_dim) for _ in range(num_decode_layers))

    def param_groups(self, weight_decay: float = 0.04) -> list[dict]:
        """The official AdamW groups (``train.py``, ``exclude_norm_bias``): decay on ≥2-D decoder weights
        only; biases, norms and ``clsQueries`` without decay; the frozen backbone left out."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 and not name.startswith("clsQueries") else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def align(self, tokens: Tensor) -> Tensor:
        """Aligned queries (B,Q,C) for one crop's tokens; only the last decoder layer counts (see module doc)."""
        queries = self.clsQueries.weight.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        queries = self.decoder_cross_attention_layers[-1](queries, tokens)
        queries = self.decoder_self_attention_layers[-1](queries)
        return self.decoder_ffn_layers[-1](queries)

    def forward(self, x: Tensor | Sequence[Tensor], outputs: Outputs = None) -> SegOutput:
        del outputs  # ``main`` is its only output; the extras come at no extra cost
        crops = [x] if isinstance(x, Tensor) else list(x)
        image = crops[0]
        b = image.shape[0]
        h, w = self.backbone.grid_size(image)
        training_crops = len(crops) > 1
        with torch.no_grad():
            tokens, attn = self.backbone(image, return_attention=training_crops)
        queries = self.align(tokens)
        scores = torch.einsum("bnc,bqc->bqn", l2n(tokens), l2n(queries)).reshape(b, -1, h, w)
        extras = {"tokens": tokens, "queries": queries}
        if training_crops:
            extras.update(self._local_crops(crops[1:], b))
            extras["fg"] = foreground_masks(attn, h, w)
        return SegOutput(main=scores, stride=self.patch_size, extras=extras)

    def _local_crops(self, crops: list[Tensor], b: int) -> dict[str, Tensor]:
        if len({tuple(c.shape) for c in crops}) != 1:
            raise UserError(f"local crops must all have one shape, got {[tuple(c.shape) for c in crops]}")
        k = len(crops)
        h, w = self.backbone.grid_size(crops[0])
        with torch.no_grad():
            tokens, attn = self.backbone(torch.cat(crops), return_attention=True)  # crop-major: k·B rows
        m, c = tokens.shape[1:]
        if self.pairing == "fixed":
            local = tokens.reshape(k, b, m, c)
        else:  # the official reshape: image b's crop j is chunk b·k + j of the crop-major list
            local = tokens.reshape(b, k, m, c).transpose(0, 1)
        return {
            "local_tokens": local,
            "local_queries": torch.stack([self.align(t) for t in local]),
            "local_fg": foreground_masks(attn, h, w).reshape(k, b, m),
        }


def patch_labels(scores: Tensor) -> Tensor:
    """(B,h,w) query index per patch: softmax over queries (temperature 1), then argmax, as the official eval."""
    return scores.softmax(dim=1).argmax(dim=1)


def eval_labels(scores: Tensor, size: int = 100) -> Tensor:
    """``evaluate/sup_overcluster.py``: nearest upsampling of the patch labels to size×size (mask_eval_size)."""
    labels = patch_labels(scores).unsqueeze(1).float()
    return F.interpolate(labels, size=(size, size), mode="nearest").squeeze(1).long()


def full_labels(scores: Tensor, size: tuple[int, int]) -> Tensor:
    """``evaluate/visualize_segment.py``: bilinear upsampling of the softmax maps to the image, then argmax."""
    probs = F.interpolate(scores.softmax(dim=1), size=size, mode="bilinear", align_corners=False)
    return probs.argmax(dim=1)


@register(
    "alignseg_ssl",
    "voc",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    num_classes=5,
    description="configs/eval_voc_config.yml: DINO ViT-S/16, 5 queries, 1 decoder layer, FFN 384 (VOC release)",
)
def build_alignseg_ssl_voc(num_classes: int = 5, pairing: str = "fixed") -> AlignSegSSL:
    return AlignSegSSL(
        vit_small(16), num_classes, decoder_heads=3, hidden_dim=384, num_decode_layers=1, pairing=pairing
    )


@register(
    "alignseg_ssl",
    "coco27",
    pretrained_source=PRETRAINED_SOURCE,
    num_classes=5,
    description="configs/eval_coco27_config.yml: DINO ViT-S/16, 5 queries, 3 decoder layers (last one used), FFN 768",
)
def build_alignseg_ssl_coco27(num_classes: int = 5, pairing: str = "fixed") -> AlignSegSSL:
    return AlignSegSSL(
        vit_small(16), num_classes, decoder_heads=3, hidden_dim=768, num_decode_layers=3, pairing=pairing
    )


@register(
    "alignseg_ssl",
    "train_voc",
    pretrained_source=PRETRAINED_SOURCE,
    num_classes=5,
    description="configs/train_{voc,coco}_config.yml layout: DINO ViT-S/16, 5 queries, 1 decoder layer, FFN 768",
)
def build_alignseg_ssl_train_voc(num_classes: int = 5, pairing: str = "fixed") -> AlignSegSSL:
    return AlignSegSSL(
        vit_small(16), num_classes, decoder_heads=3, hidden_dim=768, num_decode_layers=1, pairing=pairing
    )


@register(
    "alignseg_ssl",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    num_classes=5,
    description="2-block 48-wide ViT with patch 8 (random, frozen), 5 queries, FFN 64: CPU demo/tests",
)
def build_alignseg_ssl_tiny(num_classes: int = 5, pairing: str = "fixed") -> AlignSegSSL:
    return AlignSegSSL(
        vit_tiny(8, 64), num_classes, decoder_heads=3, hidden_dim=64, num_decode_layers=1, pairing=pairing
    )


# Multi-crop 224² training views (no flip, no scale table), RGB ImageNet norm; eval: the whole image resized
# to 448², its GT to 100², no TTA (alignseg_ssl.md §5).
register_card(
    MethodCard(
        "alignseg_ssl",
        "self_supervised",
        "imagenet_rgb",
        TrainAugment((224, 224), None, flip=False),
        {"val": Protocol("official")},
        outputs=("main",),
        head_prefixes=("clsQueries", "decoder_"),
        eval_size=(448, 448),
        eval_label_size=(100, 100),
    )
)
