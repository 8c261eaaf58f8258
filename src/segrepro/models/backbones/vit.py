"""Vision Transformer in DINO's exact key layout (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so DINO and AlignSeg-SSL files
load key for key.

Numerics follow DINO's ``vision_transformer.py`` (which self-supervised AlignSeg copies): pre-norm blocks,
LayerNorm eps 1e-6, qkv with bias, exact GELU, and the position embedding resized with bicubic
interpolation driven by ``scale_factor = (grid + 0.1) / base_grid`` (not a target size; the +0.1 changes
the numbers, see ``alignseg_ssl.md`` §2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.errors import UserError


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear (DINO's names ``qkv`` and ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if return_attention:
            # Explicit softmax(QK^T·scale) because the caller needs the attention weights themselves.
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """DINO ViT. :meth:`forward` returns the patch tokens after the final norm (CLS dropped), (B, h·w, C)
    in row-major order, and optionally the last block's CLS→patch attention (B, heads, h·w)."""

    def __init__(
        self,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.base_grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.base_grid**2 + 1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DINO's init (as the AlignSeg copy does it, convs included): trunc-normal(0.02), zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def grid_size(self, x: Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise UserError(f"ViT input {h}x{w} is not divisible by the patch size {self.patch_size}; resize or pad it")
        return h // self.patch_size, w // self.patch_size

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embedding for an h×w patch grid, resized as DINO does (bicubic, scale (h+0.1)/base)."""
        if h * w == self.base_grid**2 and h == w:
            return self.pos_embed
        g, dim = self.base_grid, self.embed_dim
        grid = self.pos_embed[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic", align_corners=False)
        if grid.shape[-2:] != (h, w):
            raise RuntimeError(f"pos-embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        return torch.cat((self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)), dim=1)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        h, w = self.grid_size(x)
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), dim=1)
        t = t + self.interpolate_pos_encoding(h, w)
        attn = None
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            t, attn = blk(t, return_attention and i == last)
        tokens = self.norm(t)[:, 1:]
        return tokens, (attn[:, :, 0, 1:] if attn is not None else None)


def vit_small(patch_size: int = 16) -> VisionTransformer:
    """DINO ViT-S: 384 wide, 12 blocks, 6 heads (21.7 M parameters at patch 16)."""
    return VisionTransformer(patch_size=patch_size, embed_dim=384, depth=12, num_heads=6)


def vit_tiny(patch_size: int = 8, img_size: int = 64) -> VisionTransformer:
    """A narrow, shallow ViT with the same structure and keys, for CPU demos and tests."""
    return VisionTransformer(patch_size=patch_size, embed_dim=48, depth=2, num_heads=3, img_size=img_size)


__all__ = ["VisionTransformer", "vit_small", "vit_tiny"]
