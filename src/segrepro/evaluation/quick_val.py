"""Single-scale whole-image validation: the quick score every training run ends with.

The full per-method protocols (sliding window, multi-scale + flip) belong to ``segrepro evaluate``;
this pass only needs the model's main logits upsampled to the label size and a confusion matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segrepro.evaluation.confusion import ConfusionMatrix, LabelConvention, SegScores
from segrepro.models.outputs import main_logits


@torch.no_grad()
def quick_validate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device,
    ignore_index: int = 255,
    workers: int = 0,
) -> SegScores:
    """mIoU of ``argmax(main)`` over ``dataset`` (samples with tensor ``image`` and trainId ``label``)."""
    model.eval()
    cm = ConfusionMatrix(LabelConvention("train_ids", num_classes, ignore_index), device=device)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers)
    for batch in tqdm(loader, desc="val", leave=False):
        image = batch["image"].to(device)
        label = batch["label"].to(device)
        logits = main_logits(model, image)
        if logits.shape[-2:] != label.shape[-2:]:
            logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=True)
        cm.update(logits.argmax(1), label)
    return cm.compute()


@torch.no_grad()
def quick_validate_ssl(model: nn.Module, dataset: Dataset, device: torch.device) -> dict:
    """The self-supervised AlignSeg's official per-image majority-vote mIoU on 100×100 label maps."""
    from segrepro.evaluation.ssl_metrics import PerImageMajorityVoteMIoU
    from segrepro.models.alignseg_ssl import eval_labels

    model.eval()
    metric = None
    for batch in tqdm(DataLoader(dataset, batch_size=1), desc="val", leave=False):
        scores = main_logits(model, batch["image"].to(device))
        metric = metric or PerImageMajorityVoteMIoU(num_clusters=scores.shape[1])
        label = batch["label"]
        metric.update(eval_labels(scores, label.shape[-1]).cpu(), label)
    assert metric is not None, "the validation split is empty"
    return metric.compute()
