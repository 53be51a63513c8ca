"""Deterministic synthetic 2D segmentation data that looks like the real thing.

Two modalities, each a pure function of ``(seed, index)`` so the same call gives the same pixels everywhere:

- ``dermoscopy``: RGB skin with uneven illumination and a dark circular vignette, an irregular pigmented lesion
  (lobed outline, colour variation, darker globules), sometimes touching the image border, and hairs drawn over
  skin and lesion alike (the mask is the lesion under the hair).
- ``ultrasound``: grayscale B-mode-like tissue layers with multiplicative speckle, a hypoechoic lesion with a
  fuzzy boundary, posterior acoustic shadowing below it, depth attenuation and a fan-shaped field of view.

Sizes are drawn per image between ``min_size`` and ``max_size`` (height and width independently), so resizing
and the inversion back to the original size are exercised. Masks are uint8 with values 0/255.

With ``classes=3`` each image also gets a second structure (:func:`add_structure`: a round bright, sharply
bounded nodule away from the lesion, like a hyperechoic nodule in ultrasound or a white structure in
dermoscopy), and masks are label maps 0 (background), 1 (lesion), 2 (nodule), for multi-class training. The
binary images are unchanged by this (the nodule is drawn with its own random stream).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lightseg.utils import atomic_path

__all__ = [
    "MODALITIES",
    "generate_case",
    "generate_dataset",
    "dermoscopy_case",
    "ultrasound_case",
    "add_structure",
    "CLASS_NAMES",
]

logger = logging.getLogger(__name__)
MODALITIES = ("dermoscopy", "ultrasound")
CLASS_NAMES = ("background", "lesion", "nodule")


def _box_blur(a: np.ndarray, radius: int, axes: Sequence[int] = (0, 1)) -> np.ndarray:
    """Separable box blur with edge padding (three passes approximate a Gaussian)."""
    if radius < 1:
        return a
    out = a.astype(np.float32)
    for axis in axes:
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float64)
        hi = np.take(c, np.arange(2 * radius + 1, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - 2 * radius - 1), axis=axis)
        out = ((hi - lo) / (2 * radius + 1)).astype(np.float32)
    return out


def _smooth(a: np.ndarray, radius: int) -> np.ndarray:
    for _ in range(3):
        a = _box_blur(a, radius)
    return a


def _low_freq_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    gh, gw = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
    return np.clip(up / (np.abs(up).max() + 1e-6), -1, 1)


def _lobed_region(
    rng: np.random.Generator, h: int, w: int, center: tuple[float, float], radius: float, irregularity: float
) -> np.ndarray:
    """Boolean mask of a star-shaped region with a random lobed outline r(theta)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    aspect = rng.uniform(0.7, 1.3)
    rot = rng.uniform(0, np.pi)
    ct, st = np.cos(rot), np.sin(rot)
    ry = (dy * ct - dx * st) * aspect
    rx = dy * st + dx * ct
    r = np.hypot(ry, rx)
    outline = np.ones_like(theta)
    for k in range(2, 7):
        outline += irregularity / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r <= radius * outline


def _draw_hair(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Dark curved hairs (quadratic Bezier curves) drawn in place."""
    h, w = img.shape[:2]
    for _ in range(count):
        p0, p1, p2 = (rng.uniform([0, 0], [h, w]) for _ in range(3))
        t = np.linspace(0, 1, int(2 * (h + w)))[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        thick = rng.integers(1, 3)
        colour = rng.uniform(20, 60, size=3)
        for dy in range(-thick + 1, thick):
            for dx in range(-thick + 1, thick):
                ys = np.clip(np.round(pts[:, 0]).astype(int) + dy, 0, h - 1)
                xs = np.clip(np.round(pts[:, 1]).astype(int) + dx, 0, w - 1)
                img[ys, xs] = 0.3 * img[ys, xs] + 0.7 * colour


def dermoscopy_case(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB dermoscopy-like image ``(h, w, 3)`` uint8 and its lesion mask ``(h, w)`` uint8 0/255."""
    skin = np.array([rng.uniform(190, 235), rng.uniform(140, 185), rng.uniform(120, 165)], np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = skin
    img *= 1 + 0.08 * _low_freq_noise(rng, h, w, 6)[..., None]
    # lesion: sometimes centred near (or beyond) the border so that it touches it
    touches = rng.random() < 0.3
    margin = 0.0 if touches else 0.25
    center = (rng.uniform(margin, 1 - margin) * h, rng.uniform(margin, 1 - margin) * w)
    radius = rng.uniform(0.15, 0.32) * min(h, w)
    mask = _lobed_region(rng, h, w, center, radius, irregularity=rng.uniform(0.2, 0.5))
    if mask.sum() < 0.01 * h * w:  # keep the lesion visible
        mask = _lobed_region(rng, h, w, (h / 2, w / 2), 0.25 * min(h, w), 0.3)
    pigment = np.array([rng.uniform(70, 140), rng.uniform(40, 90), rng.uniform(25, 70)], np.float32)
    variation = 1 + 0.25 * _low_freq_noise(rng, h, w, 10)[..., None]
    lesion = pigment * variation
    globules = _smooth((rng.random((h, w)) < 0.004).astype(np.float32), 2) * 40
    lesion = np.clip(lesion - globules[..., None] * 3, 0, 255)
    alpha = _smooth(mask.astype(np.float32), max(1, int(0.01 * min(h, w))))[..., None]
    img = img * (1 - alpha) + lesion * alpha
    # vignette of the dermatoscope's lens
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    img *= np.clip(1.25 - 0.55 * rr**2, 0.15, 1.0)[..., None]
    _draw_hair(rng, img, int(rng.integers(0, 8)))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def ultrasound_case(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale ultrasound-like image ``(h, w)`` uint8 and its lesion mask ``(h, w)`` uint8 0/255."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # tissue layers: echogenicity varies smoothly with (wavy) depth
    depth = yy + 0.05 * h * _low_freq_noise(rng, h, w, 4)
    layers = 0.55 + 0.25 * np.sin(depth / h * rng.uniform(6, 14) + rng.uniform(0, 6))
    tissue = layers * (1 + 0.2 * _low_freq_noise(rng, h, w, 12))
    center = (rng.uniform(0.3, 0.65) * h, rng.uniform(0.25, 0.75) * w)
    radius = rng.uniform(0.1, 0.2) * min(h, w)
    mask = _lobed_region(rng, h, w, center, radius, irregularity=rng.uniform(0.1, 0.35))
    fuzzy = _smooth(mask.astype(np.float32), max(2, int(0.02 * min(h, w))))
    tissue = tissue * (1 - 0.75 * fuzzy)
    # posterior acoustic shadowing: a darker column below the lesion that fades with distance
    cols = mask.any(axis=0)
    bottom = np.where(mask.any(axis=1))[0].max() if mask.any() else h
    shadow = np.zeros((h, w), np.float32)
    shadow[bottom:, cols] = np.exp(-(yy[bottom:, cols] - bottom) / (0.6 * h))
    tissue *= 1 - rng.uniform(0.25, 0.6) * _smooth(shadow, max(2, int(0.02 * w)))
    # depth attenuation and a fan-shaped field of view opening from the top centre
    tissue *= np.exp(-yy / h * rng.uniform(0.3, 0.9))
    angle = np.abs(np.arctan2(xx - w / 2, yy + 0.3 * h))
    fov = angle < rng.uniform(0.55, 0.8)
    # multiplicative Rayleigh speckle, slightly correlated like a real point-spread function
    speckle = _box_blur(rng.rayleigh(0.8, (h, w)).astype(np.float32), 1)
    img = tissue * speckle * 200 * fov
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def add_structure(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw the second class: a bright round nodule with a sharp rim, placed where it overlaps the lesion least.

    ``mask`` is the 0/255 lesion mask; returns the image and a label map 0/1/2 (the nodule wins where they meet).
    """
    h, w = mask.shape
    lesion = mask > 0
    radius = rng.uniform(0.06, 0.11) * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    best, best_overlap = None, None
    for _ in range(8):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        region = _lobed_region(rng, h, w, (cy, cx), radius, irregularity=0.1)
        overlap = float((region & lesion).sum()) / max(1.0, float(region.sum()))
        if best is None or overlap < best_overlap:
            best, best_overlap = region, overlap
        if overlap == 0:
            break
    img = image.astype(np.float32)
    edge = _smooth(best.astype(np.float32), 1)
    bright = 235.0 if img.ndim == 2 else np.array([240.0, 240.0, 250.0], np.float32)
    if img.ndim == 3:
        edge = edge[..., None]
    img = img * (1 - 0.85 * edge) + 0.85 * edge * bright + rng.normal(0, 3, img.shape) * edge
    labels = lesion.astype(np.uint8)
    labels[best] = 2
    return np.clip(img, 0, 255).astype(np.uint8), labels


def generate_case(
    modality: str, seed: int, index: int, min_size: int = 200, max_size: int = 700, classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask number ``index`` of ``modality`` for ``seed``; a pure function of its arguments.

    ``classes`` 2: mask 0/255 (lesion); 3: label map 0/1/2 with the nodule of :func:`add_structure`.
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; available: {', '.join(MODALITIES)}.")
    if classes not in (2, 3):
        raise ValueError(f"classes must be 2 (binary) or 3, got {classes}.")
    rng = np.random.default_rng([seed, MODALITIES.index(modality), index])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    builder = dermoscopy_case if modality == "dermoscopy" else ultrasound_case
    image, mask = builder(rng, h, w)
    if classes == 3:
        image, mask = add_structure(np.random.default_rng([seed, MODALITIES.index(modality), index, 3]), image, mask)
    return image, mask


def generate_dataset(
    out_dir: str | os.PathLike,
    cases: Sequence[dict],
    seed: int,
    min_size: int = 200,
    max_size: int = 700,
    progress: bool = True,
    classes: int = 2,
) -> list[dict]:
    """Write the images and masks of ``cases`` (dicts with ``image``, ``label``, ``modality``, ``index``).

    Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated PNG.
    Returns ``cases``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    for case in tqdm(cases, desc="demo data", disable=not progress, unit="img"):
        image, mask = generate_case(case["modality"], seed, int(case["index"]), min_size, max_size, classes)
        for rel, array in ((case["image"], image), (case["label"], mask)):
            with atomic_path(out / rel) as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
    logger.info("wrote %d synthetic cases to %s", len(cases), out)
    return list(cases)


def describe(cases: Sequence[dict]) -> str:
    """A one-line JSON summary (counts per modality), for logs."""
    counts: dict[str, int] = {}
    for c in cases:
        counts[c["modality"]] = counts.get(c["modality"], 0) + 1
    return json.dumps(counts, sort_keys=True)
