"""The self-supervised AlignSeg training loss (``model/criterion.py``; ``alignseg_ssl.md`` §4.3).

``total = corr_align + query_ce`` over K local crops, nothing else:

* ``corr_align``: for each local crop, the global/local soft query-assignment similarity is pushed to
  follow the centred DINO token correlation minus ``negative_pressure``, on patch pairs where both sides
  are attention foreground. A **sum** (not a mean) × 0.15 (hard-coded officially; the config key
  ``corr_coefficient`` is ignored there), averaged over the K crops.
* ``query_ce``: InfoNCE between the global and the local aligned queries (positive = the same query in
  the other view, 2Q−2 negatives), averaged over images and crops.

The crop pairing (the official bug) lives in the model (``AlignSegSSL(pairing=...)``), not here: this
loss reads the tensors the model put in :attr:`SegOutput.extras`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segrepro.errors import UserError
from segrepro.models.alignseg_ssl import l2n
from segrepro.models.outputs import SegOutput

NEGATIVE_PRESSURE = {"voc": 0.11, "coco27": 0.10}  # train_voc_config.yml / train_coco_config.yml
CORR_WEIGHT = 0.15
REQUIRED = ("tokens", "queries", "local_tokens", "local_queries", "fg", "local_fg")


def query_ce_loss(global_queries: Tensor, local_queries: Tensor, temperature: float = 1.0) -> Tensor:
    """InfoNCE over the 2Q queries of one global/local pair (B,Q,C) each (already L2-normalised).

    Row r's target is its counterpart r ± Q; every other off-diagonal entry is a negative. Same value as
    the official [positive, negatives] logits with target 0 (cross-entropy ignores column order).
    """
    b, q, _ = global_queries.shape
    z = torch.cat((global_queries, local_queries), dim=1)
    sim = z @ z.transpose(1, 2) / temperature
    eye = torch.eye(2 * q, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    target = (torch.arange(2 * q, device=z.device) + q) % (2 * q)
    return F.cross_entropy(sim.reshape(b * 2 * q, 2 * q), target.repeat(b))


def _soft_assign(tokens: Tensor, queries: Tensor) -> Tensor:
    """softmax over queries of the cosine similarity clamped at 0 (B,N,Q)."""
    return torch.einsum("bnc,bqc->bnq", l2n(tokens), l2n(queries)).clamp(min=0.0).softmax(dim=-1)


def alignseg_ssl_loss(
    out: SegOutput,
    negative_pressure: float = NEGATIVE_PRESSURE["voc"],
    temperature: float = 1.0,
    corr_weight: float = CORR_WEIGHT,
) -> dict[str, Tensor]:
    """``{"loss", "corr_align", "query_ce"}`` from a model called with [global, local_1, ..., local_K].

    Always computed in float32 (autocast off): the correlation term is a sum over ~10^5 patch pairs,
    which bf16 would round to a few significant digits.
    """
    missing = [k for k in REQUIRED if k not in out.extras]
    if missing:
        raise UserError(f"the SSL loss needs a multi-crop forward ([global, local crops...]); missing {missing}")
    with torch.autocast(out.main.device.type, enabled=False):
        return _loss(out.extras, negative_pressure, temperature, corr_weight)


def _loss(
    extras: dict[str, Tensor], negative_pressure: float, temperature: float, corr_weight: float
) -> dict[str, Tensor]:
    e = {k: (v.float() if v.is_floating_point() else v) for k, v in extras.items()}
    tokens, queries, fg = e["tokens"], e["queries"], e["fg"].bool()
    n_global = l2n(tokens)
    assign_global = _soft_assign(tokens, queries)
    n_local = e["local_tokens"].shape[0]
    corr_align = tokens.new_zeros(())
    query_ce = tokens.new_zeros(())
    for k in range(n_local):
        local_tokens, local_queries = e["local_tokens"][k], e["local_queries"][k]
        with torch.no_grad():
            corr = torch.einsum("bnc,bmc->bnm", n_global, l2n(local_tokens))
            old_mean = corr.mean()
            corr = corr - corr.mean(dim=-1, keepdim=True)
            corr = corr - corr.mean() + old_mean
            mask = fg[:, :, None] & e["local_fg"][k].bool()[:, None, :]
        similarity = torch.einsum("bnq,bmq->bnm", assign_global, _soft_assign(local_tokens, local_queries))
        corr_align = corr_align + corr_weight * (-similarity * (corr - negative_pressure))[mask].sum()
        query_ce = query_ce + query_ce_loss(l2n(queries), l2n(local_queries), temperature)
    corr_align = corr_align / n_local
    query_ce = query_ce / n_local
    return {"loss": corr_align + query_ce, "corr_align": corr_align, "query_ce": query_ce}
