"""ANN's asymmetric non-local blocks: AFNB (fusion of two stages) and APNB (pyramid self-attention).

Keys follow the official ``MendelXu/ANN`` layout (``stages.0.f_key.1.0.weight`` ...; ``BNReLU`` is a
``Sequential(BN, ReLU)``), so a released checkpoint loads strictly (reference/ann.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PSP_SIZES: tuple[int, ...] = (1, 3, 6, 8)


def bn_relu(channels: int) -> nn.Sequential:
    """torchcv's ``BNReLU``: the nesting gives the official ``….1.0.weight`` key names."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def psp_sample(x: Tensor, sizes: Sequence[int] = PSP_SIZES) -> Tensor:
    """(B, C, h, w) → (B, C, Σ s²): adaptive average pools, row-major, concatenated in ``sizes`` order."""
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in sizes], dim=-1)


class AsymmetricAttention(nn.Module):
    """Non-local attention whose keys/values are the few pyramid anchors of ``low`` (110 for 1,3,6,8).

    ``share_query_key``: APNB's query projection **is** the key projection (the same module object, so
    the state_dict lists both ``f_key.*`` and ``f_query.*`` for one set of tensors).
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        key_channels: int,
        value_channels: int,
        out_channels: int,
        share_query_key: bool = False,
        psp_sizes: Sequence[int] = PSP_SIZES,
    ) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.psp_sizes = tuple(psp_sizes)
        self.f_key = nn.Sequential(nn.Conv2d(low_channels, key_channels, 1), bn_relu(key_channels))
        if share_query_key:
            self.f_query = self.f_key
        else:
            self.f_query = nn.Sequential(nn.Conv2d(high_channels, key_channels, 1), bn_relu(key_channels))
        self.f_value = nn.Conv2d(low_channels, value_channels, 1)
        self.W = nn.Conv2d(value_channels, out_channels, 1)
        # Official init: the block starts as a no-op residual context (matters for training only).
        nn.init.zeros_(self.W.weight)
        if self.W.bias is not None:
            nn.init.zeros_(self.W.bias)

    def anchors(self, x: Tensor) -> Tensor:
        """(B, C, h, w) → (B, C, S): the positions keys and values are taken at (the pyramid pools).
        The non-local baseline of ``segrepro bench blocks`` overrides this to take every position."""
        return psp_sample(x, self.psp_sizes)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        b, _, h, w = high.shape
        # Both projections run in training even when shared, as officially: the shared BN then updates
        # its running statistics twice per forward, like the official model's. In eval the shared
        # projection of one map is computed once (the same tensor either way).
        projected = self.f_query(high)
        query = projected.flatten(2).transpose(1, 2)  # (B, hw, K)
        reuse = self.f_key is self.f_query and low is high and not self.training
        key = self.anchors(projected if reuse else self.f_key(low))  # (B, K, S)
        value = self.anchors(self.f_value(low)).transpose(1, 2)  # (B, S, V)
        sim = torch.matmul(query, key).mul_(self.key_channels**-0.5).softmax(dim=-1)
        context = torch.matmul(sim, value).transpose(1, 2).reshape(b, -1, h, w)
        return self.W(context)


class AFNB(nn.Module):
    """Asymmetric fusion: layer4 queries attend to layer3 anchors; conv-BN (no ReLU)-dropout on the concat."""

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        key_channels: int,
        value_channels: int,
        dropout: float = 0.05,
        psp_sizes: Sequence[int] = PSP_SIZES,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                AsymmetricAttention(
                    low_channels, high_channels, key_channels, value_channels, high_channels, psp_sizes=psp_sizes
                )
            ]
        )
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * high_channels, high_channels, 1), nn.BatchNorm2d(high_channels), nn.Dropout2d(dropout)
        )

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        context = self.stages[0](low, high)
        return self.conv_bn_dropout(torch.cat([context, high], dim=1))


class APNB(nn.Module):
    """Asymmetric pyramid non-local block: self-attention of a map to its own pyramid anchors."""

    def __init__(
        self,
        channels: int,
        key_channels: int,
        value_channels: int,
        dropout: float = 0.05,
        psp_sizes: Sequence[int] = PSP_SIZES,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                AsymmetricAttention(
                    channels,
                    channels,
                    key_channels,
                    value_channels,
                    channels,
                    share_query_key=True,
                    psp_sizes=psp_sizes,
                )
            ]
        )
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1), bn_relu(channels), nn.Dropout2d(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        context = self.stages[0](x, x)
        return self.conv_bn_dropout(torch.cat([context, x], dim=1))
