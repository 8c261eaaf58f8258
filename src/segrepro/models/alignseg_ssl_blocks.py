"""Self-supervised AlignSeg building blocks: the post-norm decoder layers (official module and parameter
names) and the DINO-attention foreground hint used by the training loss (``alignseg_ssl.md`` §3, §4.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _init_linear(m: nn.Module) -> None:
    """Official init: trunc-normal(0.02) Linear weights (``out_proj`` included), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


class CrossAttentionLayer(nn.Module):
    """``LN(q + MHA(q, tokens, tokens))``; no positional embeddings."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_linear)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        return self.norm(queries + self.multihead_attn(queries, memory, memory, need_weights=False)[0])


class SelfAttentionLayer(nn.Module):
    """``LN(q + MHA(q, q, q))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_linear)

    def forward(self, queries: Tensor) -> Tensor:
        return self.norm(queries + self.self_attn(queries, queries, queries, need_weights=False)[0])


class FFNLayer(nn.Module):
    """``LN(q + linear2(relu(linear1(q))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_linear)

    def forward(self, queries: Tensor) -> Tensor:
        return self.norm(queries + self.linear2(F.relu(self.linear1(queries))))


def gaussian_blur(maps: Tensor, kernel_size: int = 7, sigma: float = 0.6) -> Tensor:
    """torchvision ``GaussianBlur`` on (N,1,h,w): separable float kernel, reflect padding."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=maps.dtype, device=maps.device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    k1 = pdf / pdf.sum()
    k2 = torch.mm(k1[:, None], k1[None, :])
    pad = kernel_size // 2
    return F.conv2d(F.pad(maps, (pad, pad, pad, pad), mode="reflect"), k2[None, None])


def drop_small_components(mask: Tensor, min_size: int = 3) -> Tensor:
    """Zero 8-connected components with fewer than ``min_size`` pixels in each (h,w) map of (N,h,w) bool.

    The official code does this with ``skimage.measure.label`` and crashes on current PyTorch whenever
    such a component exists (spec §8.4); this is the intended behaviour.
    """
    out = mask.clone()
    n, h, w = mask.shape
    grid = mask.cpu().tolist()
    for i in range(n):
        seen = [[False] * w for _ in range(h)]
        for y0 in range(h):
            for x0 in range(w):
                if not grid[i][y0][x0] or seen[y0][x0]:
                    continue
                seen[y0][x0] = True
                stack, comp = [(y0, x0)], []
                while stack:
                    y, x = stack.pop()
                    comp.append((y, x))
                    for yy in range(max(y - 1, 0), min(y + 2, h)):
                        for xx in range(max(x - 1, 0), min(x + 2, w)):
                            if grid[i][yy][xx] and not seen[yy][xx]:
                                seen[yy][xx] = True
                                stack.append((yy, xx))
                if len(comp) < min_size:
                    for y, x in comp:
                        out[i, y, x] = False
    return out


@torch.no_grad()
def foreground_masks(attn: Tensor, h: int, w: int, threshold: float = 0.6, blur_sigma: float = 0.6) -> Tensor:
    """(N, h·w) bool foreground from the last block's CLS→patch attention (N, heads, h·w).

    Head mean → Gaussian blur (7, σ) → keep the patches holding the top ``threshold`` of the attention
    mass → drop components of ≤ 2 patches (the official ``process_attentions``).
    """
    attn = attn.float()  # thresholds of a cumulative mass: keep them out of bf16 under autocast
    heads = attn.shape[1]
    mean = attn[:, 0] / heads
    for i in range(1, heads):  # the official summation order
        mean = mean + attn[:, i] / heads
    blurred = gaussian_blur(mean.reshape(-1, 1, h, w), sigma=blur_sigma).reshape(-1, h * w)
    val, idx = torch.sort(blurred, dim=-1)
    val = val / val.sum(dim=-1, keepdim=True)
    keep_sorted = torch.cumsum(val, dim=-1) > (1 - threshold)
    keep = keep_sorted.gather(1, idx.argsort(dim=-1))
    return drop_small_components(keep.reshape(-1, h, w)).reshape(-1, h * w)
