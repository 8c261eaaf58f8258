"""InPlaceABN-compatible normalisation + activation, in plain torch.

The official AlignSeg and ACFNet code use mapillary's ``inplace_abn`` v1.1. Its layers keep BatchNorm's
parameter and buffer names (``weight, bias, running_mean, running_var, num_batches_tracked``) but scale by
``|weight| + eps`` instead of ``weight`` and fuse an activation (leaky ReLU 0.01 by default). Checkpoints
trained with it only reproduce their numbers under that exact math, which :class:`InPlaceABN` implements.

Only the plain-torch path exists. mapillary's fused kernel saves activation memory, not accuracy, and is
not installed here (it needs a native build), so it cannot be kept tested. The state_dict layout is
identical either way: a checkpoint written with the ``inplace_abn`` package (v1.1) loads into this module
as is and the reverse holds too; v1.0 files lack ``num_batches_tracked``, which
:mod:`segrepro.models.checkpoint` treats as optional. Under multi-GPU DDP on
CUDA, :func:`convert_sync_norm` synchronises the statistics as ``InPlaceABNSync`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("leaky_relu", "elu", "identity", "relu")


class InPlaceABN(nn.Module):
    """BatchNorm with InPlaceABN's ``|γ|+eps`` scale, followed by an activation.

    ``sync`` is switched on by :func:`convert_sync_norm` under multi-GPU DDP on CUDA; the statistics are
    then reduced over the default process group exactly as ``nn.SyncBatchNorm`` does.
    """

    def __init__(
        self,
        num_features: int,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.num_features = num_features
        self.activation = activation
        self.activation_param = activation_param
        self.eps = eps
        self.momentum = momentum
        self.sync = False
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.num_batches_tracked: Tensor
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _normalise(self, x: Tensor) -> Tensor:
        scale = self.weight.abs() + self.eps
        if self.training:
            self.num_batches_tracked.add_(1)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self.training and self.sync and x.is_cuda and distributed:
            from torch.nn.modules._functions import SyncBatchNorm as _SyncBN

            world = torch.distributed.get_world_size()
            if world > 1:
                return _SyncBN.apply(
                    x,
                    scale,
                    self.bias,
                    self.running_mean,
                    self.running_var,
                    self.eps,
                    self.momentum,
                    torch.distributed.group.WORLD,
                    world,
                )
        return F.batch_norm(
            x, self.running_mean, self.running_var, scale, self.bias, self.training, self.momentum, self.eps
        )

    def forward(self, x: Tensor) -> Tensor:
        # The activation overwrites the fresh normalised tensor, as the fused kernel does; autograd cannot
        # invert an in-place leaky ReLU / ELU of negative slope, so that case keeps a copy.
        x = self._normalise(x)
        inplace = self.activation_param >= 0
        if self.activation == "leaky_relu":
            return F.leaky_relu(x, self.activation_param, inplace=inplace)
        if self.activation == "elu":
            return F.elu(x, self.activation_param, inplace=inplace)
        if self.activation == "relu":
            return F.relu(x, inplace=True)
        return x

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, activation={self.activation}"


def convert_sync_norm(module: nn.Module) -> nn.Module:
    """Make every norm layer synchronise statistics across DDP ranks; call it after ``.to(device)``.

    Only a model on CUDA is converted: ``nn.SyncBatchNorm`` refuses CPU tensors under an initialised
    process group (gloo DDP on CPU), so a CPU model is returned unchanged and keeps per-rank statistics.
    """
    if not any(p.is_cuda for p in module.parameters()):
        return module
    for m in module.modules():
        if isinstance(m, InPlaceABN):
            m.sync = True
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def abs_scale_to_bn(weight: Tensor, eps: float = 1e-5) -> Tensor:
    """γ for a plain BatchNorm that reproduces an InPlaceABN layer: ``|γ| + eps``."""
    return weight.abs() + eps
