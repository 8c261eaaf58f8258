"""AlignSeg's figure of learned offsets: Δ^A and Δ^F of the four AlignFA modules beside the image and its GT.

The offsets come from the model's own forward through :func:`segrepro.models.alignseg.record_offsets`
(forward hooks; no copy of the forward). They are drawn flow-coloured, Middlebury style: hue is the
direction, saturation the length, one scale for all panels (so panels compare), and a colour-wheel legend.
Lengths are converted from the warp's half-pixels of the stride-4 map to pixels of the input image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from segrepro.io import atomic_write_bytes
from segrepro.models.outputs import main_logits

if TYPE_CHECKING:
    from segrepro.models.alignseg import AlignSeg


@torch.no_grad()
def compute_offsets(model: nn.Module, image: Tensor) -> dict[str, dict[str, np.ndarray]]:
    """{module: {"A": Δ1, "F": Δ2}} as (2, h, w) arrays (x, y) in input-image pixels, for one normalised
    image (3, H, W) through one whole-image forward."""
    from segrepro.models.alignseg import record_offsets

    model.eval()
    with record_offsets(cast("AlignSeg", model)) as record:
        main_logits(model, image[None])
    height, width = image.shape[-2:]
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, fields in record.items():
        out[name] = {}
        for key, delta in fields.items():
            d = delta[0].float().cpu().numpy()
            scale = np.array([width / d.shape[-1], height / d.shape[-2]], np.float32)[:, None, None]
            out[name][key] = d / 2.0 * scale  # half-pixels of the sampled map → image pixels
    return out


def flow_to_rgb(flow: np.ndarray, max_norm: float) -> np.ndarray:
    """(2, h, w) → (h, w, 3) float RGB: hue = direction (x right = red), saturation = length / max_norm."""
    from matplotlib.colors import hsv_to_rgb

    dx, dy = flow[0], flow[1]
    hue = (np.arctan2(-dy, dx) / (2 * np.pi)) % 1.0
    sat = np.clip(np.hypot(dx, dy) / max(max_norm, 1e-12), 0.0, 1.0) if max_norm > 0 else np.zeros_like(dx)
    return hsv_to_rgb(np.stack([hue, sat, np.ones_like(hue)], axis=-1))


def colour_wheel(size: int = 129) -> np.ndarray:
    """(size, size, 4) RGBA legend: the colour of every offset up to the panels' common maximum length."""
    r = np.linspace(-1.0, 1.0, size)
    x, y = np.meshgrid(r, -r)  # image rows go down; the wheel's y axis goes up
    rgb = flow_to_rgb(np.stack([x, -y]), 1.0)
    alpha = (np.hypot(x, y) <= 1.0).astype(np.float64)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def draw_offsets(
    rgb: np.ndarray, offsets: dict[str, dict[str, np.ndarray]], path: Path, gt_rgb: np.ndarray | None = None
) -> Path:
    """Column 1: image (and GT); then one column per AlignFA module, Δ^A above Δ^F; a colour wheel legend."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(offsets)
    max_norm = max((float(np.hypot(*f).max()) for fields in offsets.values() for f in fields.values()), default=0.0)
    h, w = rgb.shape[:2]
    panel = 2.6
    fig = Figure(figsize=(panel * (len(names) + 1) + 1.4, panel * 2 * h / w + 0.8))
    axes: Any = fig.subplots(2, len(names) + 1, squeeze=False)
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("image", fontsize=9)
    if gt_rgb is not None:
        axes[1, 0].imshow(gt_rgb, interpolation="nearest")
        axes[1, 0].set_title("ground truth", fontsize=9)
    for col, name in enumerate(names, start=1):
        for row, key in enumerate(("A", "F")):
            flow = offsets[name][key]
            axes[row, col].imshow(flow_to_rgb(flow, max_norm), interpolation="nearest", extent=(0, w, h, 0))
            axes[row, col].set_title(f"{name}  Δ$^{key}$  (max {np.hypot(*flow).max():.2f} px)", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    legend = fig.add_axes((0.915, 0.35, 0.08, 0.3))
    lim = max_norm or 1.0  # all-zero offsets (an untrained model): any scale shows white
    legend.imshow(colour_wheel(), extent=(-lim, lim, -lim, lim))
    legend.set_title(f"offset (px)\n|Δ| ≤ {max_norm:.2f}", fontsize=8)
    legend.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.01, right=0.9, top=0.9, bottom=0.02, wspace=0.05, hspace=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def offsets_figure(
    model: nn.Module,
    transform: Any,
    rgb: np.ndarray,
    path: Path,
    device: torch.device,
    gt_rgb: np.ndarray | None = None,
) -> Path:
    """The whole figure for one RGB image: normalise as the run did, record the offsets, draw."""
    x = transform({"image": rgb, "name": ""})["image"].to(device)
    return draw_offsets(rgb, compute_offsets(model.to(device), x), path, gt_rgb)
