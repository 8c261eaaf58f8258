"""Per-method transforms (scale, ignore padding, crop, flip, brightness, normalisation), built from each
method's card, and the loader."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from segrepro.data.loader import build_loader
from segrepro.data.transforms_ssl import MultiCrop
from segrepro.data.transforms import (
    ALIGNSEG_SCALES, NORMALIZATIONS, Compose, Normalize, PadTo, RandomBrightness, RandomCrop,
    RandomHorizontalFlip, RandomResize, RandomScaleChoice, ResizeShortSide, ScaleRange, ToTensor, TrainAugment,
    build_eval_transforms, build_train_transforms, resize_label,
)
from segrepro.models import get_card, list_methods


def _norm(method: str):
    return NORMALIZATIONS[get_card(method).normalization]


def build_transforms(method: str, train: bool, crop: int | None = None, generator: torch.Generator | None = None):
    """A method's official pipeline as its card describes it (train crop replaced by ``crop``)."""
    card = get_card(method)
    if not train:
        return build_eval_transforms(_norm(method), card.eval_size, card.eval_label_size)
    aug = card.train if crop is None else replace(card.train, crop=(crop, crop))
    return build_train_transforms(aug, _norm(method), generator)


def _sample(h: int = 40, w: int = 50, seed: int = 0) -> dict:
    """Label = column index mod 7; image channel 0 encodes the label, so image/label alignment is checkable."""
    label = (np.arange(w)[None, :].repeat(h, 0) % 7).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = np.stack([label * 30, rng.integers(0, 256, (h, w)), np.full((h, w), 77)], axis=-1).astype(np.uint8)
    return {"image": image, "label": label, "name": "x"}


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_normalisation_table_exact_values() -> None:
    image = np.empty((4, 5, 3), np.uint8)
    image[...] = (10, 20, 30)  # RGB
    expected = {
        "alignseg": [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434],  # BGR, no std
        "gald": [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434],
        "acfnet": [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434],
        "ann": [30 - 102.9801, 20 - 115.9465, 10 - 122.7717],
        "dgcnet": [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225],  # RGB
        "alignseg_ssl": [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225],
    }
    assert set(expected) == set(list_methods())
    for method, values in expected.items():
        out = ToTensor()(Normalize(_norm(method))({"image": image}))["image"]
        assert out.shape == (3, 4, 5) and out.dtype == torch.float32
        for c in range(3):
            torch.testing.assert_close(out[c], torch.full((4, 5), values[c], dtype=torch.float32), rtol=0, atol=2e-6)


def test_pad_fills_ignore_and_zero_bottom_right() -> None:
    s = Normalize(_norm("alignseg"))(_sample(30, 20))
    out = PadTo((36, 32))(s)
    assert out["image"].shape == (36, 32, 3) and out["label"].shape == (36, 32)
    assert (out["label"][30:] == 255).all() and (out["label"][:, 20:] == 255).all()
    assert (out["image"][30:] == 0).all() and (out["image"][:, 20:] == 0).all()
    np.testing.assert_array_equal(out["label"][:30, :20], s["label"])


@pytest.mark.parametrize("method,crop", [("alignseg", 64), ("gald", 48), ("dgcnet", 56), ("ann", 48)])
def test_train_pipeline_output_size_alignment_and_labels(method: str, crop: int) -> None:
    t = build_transforms(method, train=True, crop=crop, generator=_gen(3))
    for k in range(6):
        out = t(_sample(seed=k))
        assert out["image"].shape == (3, crop, crop) and out["image"].dtype == torch.float32
        assert out["label"].shape == (crop, crop) and out["label"].dtype == torch.int64
        assert set(out["label"].unique().tolist()) <= set(range(7)) | {255}
        small = t(_sample(10, 12, seed=k))  # even x2.1 stays below the crop: always padded with ignore
        assert small["image"].shape == (3, crop, crop) and (small["label"] == 255).any()
        assert (small["image"][:, small["label"] == 255] == 0).all()


def test_crop_before_normalise_equals_official_order() -> None:
    """build_transforms crops before normalising; the official order (normalise, pad, crop) is identical."""
    g_official, g_ours = _gen(5), _gen(5)
    official = Compose([RandomScaleChoice(generator=g_official), Normalize(_norm("gald")), PadTo((48, 48)),
                        RandomCrop((48, 48), generator=g_official), RandomHorizontalFlip(generator=g_official), ToTensor()])
    ours = build_transforms("gald", train=True, crop=48, generator=g_ours)
    for seed in range(8):  # sizes around the crop: padded, cropped, or both
        sample = _sample(30 + 5 * seed, 60 - 4 * seed, seed=seed)
        a, b = official(sample), ours(sample)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_flip_moves_image_and_label_together() -> None:
    s = _sample()
    out = RandomHorizontalFlip(p=1.0)(s)
    np.testing.assert_array_equal(out["label"], s["label"][:, ::-1])
    np.testing.assert_array_equal(out["image"][..., 0], out["label"] * 30)
    assert RandomHorizontalFlip(p=0.0)(s) is s


def test_scale_and_crop_keep_image_label_alignment() -> None:
    """Nearest label / bilinear image at a scale that maps pixels exactly (×2) keeps the column code."""
    s = _sample(20, 21)
    out = RandomScaleChoice(scales=(2.0,))(s)
    assert out["image"].shape == (40, 42, 3) and out["label"].shape == (40, 42)
    np.testing.assert_array_equal(out["label"], resize_label(s["label"], (40, 42)))
    np.testing.assert_array_equal(out["label"][:, ::2], s["label"].repeat(2, 0))
    cropped = RandomCrop((16, 16), generator=_gen(0))(out)
    assert cropped["image"].shape == (16, 16, 3) and cropped["label"].shape == (16, 16)
    assert ALIGNSEG_SCALES[0] == pytest.approx(0.7) and ALIGNSEG_SCALES[-1] == pytest.approx(2.1) and len(ALIGNSEG_SCALES) == 15


def test_ann_resize_range_and_brightness() -> None:
    s = _sample(100, 100)
    g = _gen(1)
    for _ in range(20):
        h, w = RandomResize(generator=g)(s)["image"].shape[:2]
        assert 0.5 * 100 / 1.05 - 1 <= h <= 2.0 * 100 / 0.94 + 1 and 0.5 * 100 * 0.94 - 1 <= w <= 2.0 * 100 * 1.05 + 1
    flat = {"image": np.full((4, 4, 3), 5, np.uint8)}
    shifts = set()
    for _ in range(50):
        img = RandomBrightness(10, generator=g)(flat)["image"].astype(int)
        assert (img == img[0, 0, 0]).all() and 0 <= img[0, 0, 0] <= 15  # one shift for all channels, clipped at 0
        shifts.add(int(img[0, 0, 0]))
    assert len(shifts) > 5


def test_train_min_side_resizes_before_the_random_resize() -> None:
    """ANN ADE20K: short side to ``min_side`` (up or down, aspect kept), then the random resize draws from it."""
    small, tall = ResizeShortSide(20)(_sample(10, 30)), ResizeShortSide(20)(_sample(60, 40))
    assert small["image"].shape[:2] == small["label"].shape == (20, 60)
    assert tall["image"].shape[:2] == (30, 20)
    np.testing.assert_array_equal(small["label"], resize_label(_sample(10, 30)["label"], (20, 60)))
    aug = TrainAugment((8, 8), ScaleRange((1.0, 1.0)), flip=False, min_side=20)
    first = build_train_transforms(aug, _norm("ann"), _gen(0)).transforms[:2]
    assert isinstance(first[0], ResizeShortSide) and isinstance(first[1], RandomResize)
    resized = Compose(first)(_sample(10, 30))  # scale 1, aspect 1: the random resize keeps the 20-px short side
    assert resized["image"].shape[:2] == (20, 60)
    out = build_train_transforms(aug, _norm("ann"), _gen(0))(_sample(10, 30))
    assert tuple(out["image"].shape) == (3, 8, 8)


def test_recipe_train_min_side_reaches_the_pipeline() -> None:
    from pathlib import Path

    from segrepro.engine.config import load_params, resolve_recipe

    cfg = resolve_recipe(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "ann", "official_ade20k")
    assert cfg.train_augment().min_side == 520
    assert isinstance(build_train_transforms(cfg.train_augment(), cfg.norm()).transforms[0], ResizeShortSide)


def test_seeded_generator_reproduces_pipeline() -> None:
    runs = [build_transforms("ann", train=True, crop=32, generator=_gen(7))(_sample()) for _ in range(2)]
    assert torch.equal(runs[0]["image"], runs[1]["image"]) and torch.equal(runs[0]["label"], runs[1]["label"])
    other = build_transforms("ann", train=True, crop=32, generator=_gen(8))(_sample())
    assert not torch.equal(runs[0]["image"], other["image"])


def test_eval_pipelines() -> None:
    out = build_transforms("alignseg", train=False)(_sample())
    assert out["image"].shape == (3, 40, 50) and out["label"].shape == (40, 50)
    ssl = build_transforms("alignseg_ssl", train=False)(_sample())
    assert ssl["image"].shape == (3, 448, 448) and ssl["label"].shape == (100, 100)
    views = MultiCrop(size=32, generator=_gen(0))(_sample(64, 80))["crops"]
    assert len(views) == 3 and all(v.shape == (3, 32, 32) for v in views)


class _Samples(Dataset):
    def __init__(self, transform: Compose) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        return self.transform(_sample(seed=i))


def test_loader_is_reproducible_with_workers() -> None:
    ds = _Samples(Compose([RandomScaleChoice(), Normalize(_norm("ann")), PadTo((40, 40)),
                           RandomCrop((40, 40)), RandomHorizontalFlip(), ToTensor()]))

    def run(seed: int) -> list[torch.Tensor]:
        loader = build_loader(ds, batch_size=2, train=True, workers=1, seed=seed)
        assert loader.persistent_workers and loader.drop_last
        return [b["image"] for b in loader]

    a, b, c = run(0), run(0), run(1)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    ordered = build_loader(ds, batch_size=4, train=False, workers=0)
    assert [len(batch["name"]) for batch in ordered] == [4, 2]
