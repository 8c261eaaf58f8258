"""``segrepro predict``: run a trained model on one's own images (any size, any aspect, any PIL mode).

Inputs are files, folders (searched recursively) or glob patterns. Every output has the input's own size:
a colour overlay with the dataset's palette and a legend of the classes present, label PNGs (Cityscapes
labelIds, trainIds) and a colour-coded label PNG. Supervised models run an inference protocol of
:mod:`segrepro.evaluation.inference` on the normalised image. Self-supervised AlignSeg follows the
official ``evaluate/visualize_segment.py``: a 480² square resize, softmax over the queries, bilinear
upsampling of the query probabilities to 480², argmax; the 480² query map is then brought back to the
input's size by nearest-neighbour resizing, and drawn in the official five query colours.
An unreadable file is reported on one line and skipped; the others still run.
"""

from __future__ import annotations

import glob
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from tqdm import tqdm

from segrepro.data.transforms import resize_label
from segrepro.errors import UserError
from segrepro.evaluation.inference import Protocol, predict_classes
from segrepro.evaluation.predict import overlay, save_prediction
from segrepro.io import atomic_write_bytes
from segrepro.models.outputs import main_logits

FORMATS = ("overlay", "labelIds", "trainIds", "color")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
SSL_SIZE = 480  # visualize_segment.py --image_size default
# visualize_segment.py's display_allsegments colours, one per query
SSL_QUERY_COLOURS = np.array([(128, 0, 0), (30, 144, 255), (75, 0, 130), (184, 134, 11), (0, 128, 0)], np.uint8)


def _rgb(colour: Sequence[int]) -> tuple[int, int, int]:
    return int(colour[0]), int(colour[1]), int(colour[2])


@dataclass(frozen=True)
class InputImage:
    """A file to predict and its output stem (relative to ``--out``; folder inputs keep their subfolders)."""

    path: Path
    stem: Path


def collect_inputs(inputs: Sequence[str]) -> tuple[list[InputImage], list[str]]:
    """(images in argument order without duplicates, one problem line per argument that matched nothing)."""
    found: dict[Path, InputImage] = {}
    problems: list[str] = []

    def add(path: Path, stem: Path) -> None:
        found.setdefault(path.resolve(), InputImage(path, stem))

    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            for f in files:
                add(f, f.relative_to(path).with_suffix(""))
            if not files:
                problems.append(f"{arg}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            add(path, Path(path.stem))
        elif glob.has_magic(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            for m in matches:
                add(m, Path(m.stem))
            if not matches:
                problems.append(f"{arg}: pattern matches no file")
        else:
            problems.append(f"{arg}: no such file or folder")
    return list(found.values()), problems


def parse_formats(value: str | None, label_ids: bool) -> tuple[str, ...]:
    """``--format`` list; the default is an overlay plus the dataset's own label PNG."""
    if not value:
        return ("overlay", "labelIds" if label_ids else "trainIds")
    formats = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {value!r}: choose from {','.join(FORMATS)}", exit_code=2)
    if "labelIds" in formats and not label_ids:
        raise UserError(
            "--format labelIds: labelIds exist for Cityscapes only; use trainIds (class indices)", exit_code=2
        )
    return formats


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB of any PIL-readable image (greyscale, palette, RGBA and 16-bit are converted)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I"):  # 16-bit greyscale: keep the top byte, not a clipped value
            im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8))
        return np.asarray(im.convert("RGB"))


@dataclass
class ImagePredictor:
    """The class map of one RGB image at its own size; ``transform`` is the method's eval normalisation."""

    model: nn.Module
    transform: Callable[[dict], dict]
    protocol: Protocol
    device: torch.device
    self_supervised: bool = False
    tile_batch: int = 4

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = self.transform({"image": rgb, "name": ""})["image"].to(self.device)
        if self.self_supervised:
            from segrepro.models.alignseg_ssl import full_labels

            queries = full_labels(main_logits(self.model, x[None]), tuple(x.shape[-2:]))[0]
            return resize_label(queries.cpu().numpy().astype(np.uint8), rgb.shape[:2])
        return predict_classes(self.model, x, self.protocol, self.tile_batch).cpu().numpy().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_legend(image: Image.Image, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    """The classes present as colour swatches with names on a translucent box in the top-left corner;
    entries wrap into columns so the image keeps its size."""
    if not entries:
        return image
    w, h = image.size
    size = max(9, min(18, min(w, h) // 30))
    font, pad, line = _font(size), max(2, size // 3), size + max(2, size // 3)
    per_column = max(1, (h - 2 * pad) // line)
    width = max(int(ImageDraw.Draw(image).textlength(n, font=font)) for n, _ in entries) + size + 3 * pad
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    columns = -(-len(entries) // per_column)
    rows = min(len(entries), per_column)
    draw.rectangle((0, 0, min(w, columns * width + pad), min(h, rows * line + 2 * pad)), fill=(0, 0, 0, 150))
    for i, (name, colour) in enumerate(entries):
        x, y = pad + (i // per_column) * width, pad + (i % per_column) * line
        draw.rectangle((x, y + 1, x + size, y + size), fill=(*colour, 255), outline=(255, 255, 255, 255))
        draw.text((x + size + pad, y), name, fill=(255, 255, 255, 255), font=font)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Outputs:
    """What to write for each image: formats, class names and colours (index = class id), overlay alpha."""

    out: Path
    formats: tuple[str, ...]
    names: Sequence[str]
    palette: np.ndarray
    alpha: float = 0.5

    def write(self, rgb: np.ndarray, classes: np.ndarray, stem: Path) -> list[Path]:
        base = self.out / stem
        written = []
        for fmt in self.formats:
            path = base.with_name(f"{base.name}_{fmt}.png")
            if fmt == "overlay":
                present = [int(c) for c in np.unique(classes) if c < len(self.palette)]
                entries = [(str(self.names[c]), _rgb(self.palette[c])) for c in present]
                blended = Image.fromarray(overlay(rgb, classes, self.alpha, self.palette))
                atomic_write_bytes(path, _png(draw_legend(blended, entries)))
            elif fmt == "color":
                im = Image.fromarray(classes.astype(np.uint8), mode="L").convert("P")
                im.putpalette(self.palette.reshape(-1).tolist())
                atomic_write_bytes(path, _png(im))
            else:
                save_prediction(classes, path, fmt)
            written.append(path)
        return written


@dataclass
class PredictResult:
    written: list[Path] = field(default_factory=list)
    images: int = 0
    failed: list[str] = field(default_factory=list)


def predict_images(predictor: ImagePredictor, images: Sequence[InputImage], outputs: Outputs) -> PredictResult:
    """Predict every image (progress bar on stderr); a file that cannot be read is one ``error:`` line."""
    result = PredictResult()
    for item in tqdm(images, desc="predict", unit="img"):
        try:
            rgb = read_rgb(item.path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            result.failed.append(f"{item.path}: cannot read image ({reason})")
            tqdm.write(f"error: {result.failed[-1]}", file=sys.stderr)
            continue
        result.written += outputs.write(rgb, predictor(rgb), item.stem)
        result.images += 1
    return result
