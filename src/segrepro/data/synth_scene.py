"""Deterministic synthetic street-like scenes shared by every synthetic dataset.

Why: the pipeline must run end to end without real data, and tiny models trained for a few hundred CPU
iterations must be able to learn the classes. So every class has a fixed appearance (base colour,
oriented stripes of its own period and colour direction) recoverable from a small receptive field,
while per-region colour shifts, per-image gain and pixel noise keep the task non-trivial. Scenes follow
a plausible layout: sky on top, a skyline of "stuff", ground at the bottom, objects with instances in
between, a few void blobs. Everything is numpy-vectorised and a pure function of the Generator.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

ROLES = ("sky", "stuff", "ground", "object", "thin", "void", "ego")
_UNFORCEABLE = ("void", "ego")


@dataclass(frozen=True)
class SceneClass:
    """One class of a synthetic dataset.

    ``value`` is written into the label map as is (a labelId, a trainId, a raw PNG value: the dataset
    decides). ``role`` places it: sky (top), stuff (skyline blocks), ground (bottom), object / thin
    (shapes standing on the ground), void (small blobs), ego (a band at the very bottom). ``required``
    classes are guaranteed to appear in every split (evaluated classes); void/ego never are.
    """

    value: int
    role: str
    instances: bool = False
    required: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown scene role {self.role!r}; use one of {ROLES}")


@dataclass(frozen=True)
class Scene:
    label: np.ndarray  # (H, W) int32 class values
    instance: np.ndarray  # (H, W) int32: k for the k-th instance of its class (0-based), -1 elsewhere
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class Appearance:
    """Per-class appearance; fixed for a dataset so that it is the same in every split."""

    colour: np.ndarray  # (n, 3) base RGB
    stripe_dir: np.ndarray  # (n, 3) unit colour direction the stripes modulate
    period: np.ndarray  # (n,) stripe period in pixels
    angle: np.ndarray  # (n,) stripe orientation in radians
    amp: np.ndarray  # (n,) stripe amplitude
    aspect: np.ndarray  # (n,) object width / height
    shape: np.ndarray  # (n,) 0 rectangle, 1 ellipse, 2 trapezoid


def make_appearance(n: int, seed: int) -> Appearance:
    """Well-separated base colours (greedy farthest point over random candidates) plus textures."""
    rng = np.random.default_rng([seed, 0x5CE7E])
    candidates = rng.uniform(35.0, 220.0, size=(4096, 3))
    chosen = [int(rng.integers(len(candidates)))]
    dist = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(candidates - candidates[nxt], axis=1))
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return Appearance(
        colour=candidates[chosen],
        stripe_dir=direction,
        period=rng.choice(np.array([3.0, 4.0, 6.0, 8.0, 12.0]), size=n),
        angle=rng.choice(np.array([0.0, 0.25, 0.5, 0.75]) * math.pi, size=n) + rng.uniform(-0.1, 0.1, n),
        amp=rng.uniform(8.0, 16.0, size=n),  # below half the colour spacing: colour stays the main cue
        aspect=rng.uniform(0.7, 2.0, size=n),  # no sliver classes: each object class keeps some area
        shape=rng.integers(0, 3, size=n),
    )


class SceneComposer:
    """Composes scenes for one dataset's class list; ``compose_split`` guarantees class coverage."""

    noise_sigma = 7.0
    region_sigma = 7.0

    def __init__(
        self,
        classes: Sequence[SceneClass],
        appearance_seed: int | str = 0,
        objects_per_scene: tuple[int, int] | None = None,
    ) -> None:
        """``objects_per_scene`` (low, high inclusive) defaults to about one object per object class, so
        that every object class is seen often enough to be learnt from a handful of images."""
        if not classes:
            raise ValueError("a scene needs at least one class")
        self.classes = tuple(classes)
        seed = zlib.crc32(appearance_seed.encode()) if isinstance(appearance_seed, str) else appearance_seed
        self.appearance = make_appearance(len(self.classes), seed)
        self.values = np.array([c.value for c in self.classes], dtype=np.int32)
        roles = np.array([c.role for c in self.classes])
        self._pool = {role: np.flatnonzero(roles == role) for role in ROLES}
        self._objects = np.flatnonzero((roles == "object") | (roles == "thin"))
        self._fill = np.flatnonzero(~np.isin(roles, _UNFORCEABLE))
        n_obj = len(self._objects)
        high = min(14, n_obj + 2) if n_obj else 0
        self.objects_per_scene = objects_per_scene or (min(high, max(3, n_obj // 2)), high)
        self.required = frozenset(i for i, c in enumerate(self.classes) if c.required and c.role not in _UNFORCEABLE)

    # -- public -------------------------------------------------------------------------------------
    def compose(self, height: int, width: int, rng: np.random.Generator, force: Sequence[int] = ()) -> Scene:
        """One scene; every class index in ``force`` gets its own visible patch."""
        canvas = _Canvas(height, width)
        self._layout(canvas, rng)
        self._place_forced(canvas, list(force), rng)
        return self._render(canvas, rng)

    def compose_split(self, count: int, height: int, width: int, rng: np.random.Generator) -> Iterator[Scene]:
        """``count`` scenes in which every required class appears at least once (if count ≥ 1)."""
        seen: set[int] = set()
        for i in range(count):
            missing = sorted(self.required - seen)
            remaining = count - i
            if remaining == 1:
                force = missing
            else:  # spread the forcing over the split, leaving natural occurrences a chance
                quota = max(0, math.ceil(len(missing) / remaining) - 1)
                force = [int(c) for c in rng.permutation(missing)[:quota]] if missing else []
            scene = self.compose(height, width, rng, force)
            seen.update(self._index_of(np.unique(scene.label)))
            yield scene

    # -- layout -------------------------------------------------------------------------------------
    def _pick(self, role: str, rng: np.random.Generator, first_bias: float = 0.0) -> int | None:
        """A class of ``role``; not-required (ignored) classes are drawn 4x less often."""
        pool = self._pool[role]
        if len(pool) == 0:
            return None
        if first_bias and rng.random() < first_bias:
            return int(pool[0])
        weight = np.array([1.0 if self.classes[i].required else 0.25 for i in pool])
        return int(rng.choice(pool, p=weight / weight.sum()))

    def _layout(self, cv: _Canvas, rng: np.random.Generator) -> None:
        h, w = cv.h, cv.w
        has_sky = len(self._pool["sky"]) > 0
        has_ground = len(self._pool["ground"]) > 0
        horizon = int(h * rng.uniform(0.38, 0.55)) if has_ground else h
        top = self._pick("sky", rng)
        cv.fill(np.ones((h, w), bool), int(rng.choice(self._fill)) if top is None else top)
        if len(self._pool["stuff"]):
            x0 = 0
            while x0 < w:
                x1 = min(w, x0 + max(2, int(w * rng.uniform(0.08, 0.3))))
                y_top = int(horizon * rng.uniform(0.05, 0.8)) if has_sky else 0
                mask = np.zeros((h, w), bool)
                mask[y_top:horizon, x0:x1] = True
                cv.fill(mask, self._pick("stuff", rng))
                x0 = x1
        if has_ground:
            self._ground(cv, horizon, rng)
        if len(self._objects):
            low, high = self.objects_per_scene
            n_obj = int(rng.integers(low, high + 1))
            rounds = math.ceil(n_obj / len(self._objects))  # cycle through the classes: balanced frequencies
            kinds = np.concatenate([rng.permutation(self._objects) for _ in range(rounds)])[:n_obj]
            bottoms = np.sort(rng.uniform(horizon if has_ground else h * 0.3, h, size=n_obj))
            for cls, y_b in zip(kinds, bottoms, strict=True):  # far (high) objects first, near ones drawn over them
                self._object(cv, int(cls), float(y_b), horizon, rng)
        for _ in range(int(rng.integers(0, 3))):
            void = self._pick("void", rng)
            if void is not None:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                cv.fill(_ellipse(cv, cy, cx, h * rng.uniform(0.02, 0.06), w * rng.uniform(0.02, 0.05)), void)
        ego = self._pick("ego", rng)
        if ego is not None:
            depth = h * rng.uniform(0.04, 0.1)
            bulge = depth * 0.6 * (1 - ((cv.xs - w / 2) / (w / 2)) ** 2)
            cv.fill(cv.ys >= h - depth - bulge, ego)

    def _ground(self, cv: _Canvas, horizon: int, rng: np.random.Generator) -> None:
        h, w = cv.h, cv.w
        below = cv.ys >= horizon
        main = self._pick("ground", rng, first_bias=0.7)
        cv.fill(below & np.ones((1, w), bool), main)
        centre = w * rng.uniform(0.35, 0.65)
        half = w * rng.uniform(0.04, 0.12) + (cv.ys - horizon) * (w / max(h, 1)) * rng.uniform(0.5, 1.4)
        for side in (cv.xs < centre - half, cv.xs > centre + half):
            if rng.random() < 0.8:
                cv.fill(below & side, self._pick("ground", rng))

    def _object(self, cv: _Canvas, cls: int, y_b: float, horizon: float, rng: np.random.Generator) -> None:
        h, w = cv.h, cv.w
        near = (y_b - horizon) / max(h - horizon, 1.0)
        height = h * rng.uniform(0.15, 0.32) * (0.6 + 0.8 * near)
        if self.classes[cls].role == "thin":  # a stride-8 tiny model must still see a pole at 0.5x scale
            height, width = height * 1.6, max(4.0, w * rng.uniform(0.02, 0.035))
        else:
            width = min(w * 0.4, height * self.appearance.aspect[cls] * rng.uniform(0.8, 1.25))
        cx = rng.uniform(0, w)
        mask = _shape(cv, int(self.appearance.shape[cls]), y_b - height, y_b, cx - width / 2, cx + width / 2)
        cv.fill(mask, cls, instance=self.classes[cls].instances)

    def _place_forced(self, cv: _Canvas, force: list[int], rng: np.random.Generator) -> None:
        """Each forced class gets its own cell of a grid, so no forced patch can hide another."""
        if not force:
            return
        cols = max(1, math.ceil(math.sqrt(len(force) * cv.w / cv.h)))
        rows = math.ceil(len(force) / cols)
        cells = rng.permutation(rows * cols)[: len(force)]
        ch, cw = cv.h / rows, cv.w / cols
        for cls, cell in zip(force, cells, strict=True):
            r, c = divmod(int(cell), cols)
            fy, fx = rng.uniform(0.55, 0.85, size=2)
            y0, x0 = r * ch + ch * (1 - fy) / 2, c * cw + cw * (1 - fx) / 2
            mask = np.zeros((cv.h, cv.w), bool)
            mask[int(y0) : max(int(y0) + 1, int(y0 + ch * fy)), int(x0) : max(int(x0) + 1, int(x0 + cw * fx))] = True
            cv.fill(mask, cls, instance=self.classes[cls].instances)

    # -- rendering ----------------------------------------------------------------------------------
    def _render(self, cv: _Canvas, rng: np.random.Generator) -> Scene:
        """Per-class trig/frequency tables indexed per pixel and in-place sums: the same float64 operations in
        the same order as the plain formula (byte-identical scenes), at a fraction of the temporaries."""
        app, idx = self.appearance, cv.index
        wave = cv.xs * np.take(np.cos(app.angle), idx)
        wave += cv.ys * np.take(np.sin(app.angle), idx)
        wave *= np.take(2 * math.pi / app.period, idx)
        np.sin(wave, out=wave)
        wave *= np.take(app.amp, idx)
        offsets = rng.normal(0.0, self.region_sigma, size=(cv.regions, 3))
        noise = rng.normal(0.0, self.noise_sigma, size=(cv.h, cv.w, 3))
        gain = rng.uniform(0.95, 1.05)
        image = np.take(app.colour, idx, axis=0)
        image += wave[..., None] * np.take(app.stripe_dir, idx, axis=0)
        image += np.take(offsets, cv.region, axis=0)
        image += noise
        image *= gain
        np.rint(image, out=image)
        np.clip(image, 0, 255, out=image)
        return Scene(label=self.values[idx], instance=cv.instance, image=image.astype(np.uint8))

    def _index_of(self, values: np.ndarray) -> set[int]:
        present = set(values.tolist())
        return {i for i, v in enumerate(self.values.tolist()) if v in present}


class _Canvas:
    """Index map + region map + per-class instance counter, painted in drawing order."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.ys = np.arange(h, dtype=np.float64)[:, None]
        self.xs = np.arange(w, dtype=np.float64)[None, :]
        self.index = np.zeros((h, w), dtype=np.int32)
        self.region = np.zeros((h, w), dtype=np.int32)
        self.instance = np.full((h, w), -1, dtype=np.int32)
        self.regions = 1
        self._next_instance: dict[int, int] = {}

    def fill(self, mask: np.ndarray, cls: int | None, instance: bool = False) -> None:
        if cls is None:
            return
        mask = np.broadcast_to(mask, (self.h, self.w))
        if not mask.any():
            return
        self.index[mask] = cls
        self.region[mask] = self.regions
        self.regions += 1
        k = -1
        if instance:
            k = self._next_instance.get(cls, 0)
            self._next_instance[cls] = k + 1
        self.instance[mask] = k


def _ellipse(cv: _Canvas, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((cv.ys - cy) / max(ry, 0.5)) ** 2 + ((cv.xs - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _shape(cv: _Canvas, kind: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    """Rectangle, ellipse or trapezoid (narrow top) inside the box; at least one pixel wide."""
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inside_y = (cv.ys >= y0) & (cv.ys < y1)
    if kind == 1:
        return _ellipse(cv, (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2)
    if kind == 2:
        t = np.clip((cv.ys - y0) / (y1 - y0), 0, 1)
        inset = (x1 - x0) * 0.3 * (1 - t)
        return inside_y & (cv.xs >= x0 + inset) & (cv.xs < x1 - inset)
    return inside_y & (cv.xs >= x0) & (cv.xs < x1)
