"""Data augmentation, training only (inference never sees it).

Config (normalized, every key present)::

    {"gaussian_noise": 0.0,            # stddev, any input
     "random_flip": null | "horizontal" | "vertical" | "horizontal_and_vertical",
     "random_rotation": 0.0,           # factor: angle ~ U(-f·360°, f·360°)
     "random_translation": {"height_factor": 0.0, "width_factor": 0.0},   # shift ~ U(-f·size, f·size)
     "random_zoom": {"height_factor": 0.0, "width_factor": null}}         # scale ~ 1 + U(-f, f); > 1 zooms out

Flip, rotation, translation and zoom need an image-shaped input (input_shape (H, W) or (H, W, C)).
Rotation, translation and zoom are one affine warp per sample with bilinear sampling and Keras's
default fill mode "reflect" (d c b a | a b c d | d c b a). Augmentation is applied to the batch after
standardization, so the noise stddev is in standardized units.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
IMAGE_KEYS = ("random_flip", "random_rotation", "random_translation", "random_zoom")


def _factor(v, field) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not 0 <= v <= 1:
        raise ConfigError(field, f"must be a number in [0, 1], got {v!r}")
    return float(v)


def _pair(v, field, default_width):
    if v is None or v is False:
        v = 0.0
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"height_factor": _factor(v, field), "width_factor": default_width(float(v))}
    if not isinstance(v, dict):
        raise ConfigError(field, "must be a number or {\"height_factor\", \"width_factor\"}")
    for key in v:
        if key not in ("height_factor", "width_factor"):
            raise ConfigError(f"{field}.{key}", "unknown option")
    h = _factor(v.get("height_factor", 0.0), f"{field}.height_factor")
    w = v.get("width_factor", default_width(h))
    return {"height_factor": h, "width_factor": None if w is None else _factor(w, f"{field}.width_factor")}


def normalize(value, input_rank: int | None = None) -> dict:
    if value is None or value is False:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("augmentation", "must be an object")
    for key in value:
        if key not in ("gaussian_noise", *IMAGE_KEYS):
            raise ConfigError(f"augmentation.{key}", "unknown augmentation")
    noise = value.get("gaussian_noise", 0.0) or 0.0
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not math.isfinite(noise) or noise < 0:
        raise ConfigError("augmentation.gaussian_noise", "must be a stddev >= 0")
    flip = value.get("random_flip")
    if flip is True:
        flip = "horizontal_and_vertical"    # Keras's default mode
    if flip is False:
        flip = None
    if flip is not None and flip not in FLIP_MODES:
        raise ConfigError("augmentation.random_flip", f"must be one of {', '.join(FLIP_MODES)}")
    out = {
        "gaussian_noise": float(noise),
        "random_flip": flip,
        "random_rotation": _factor(value.get("random_rotation", 0.0) or 0.0, "augmentation.random_rotation"),
        "random_translation": _pair(value.get("random_translation"), "augmentation.random_translation",
                                    lambda h: h),
        "random_zoom": _pair(value.get("random_zoom"), "augmentation.random_zoom", lambda h: None),
    }
    if input_rank is not None and input_rank == 1:
        for key in IMAGE_KEYS:
            if image_active(out, only=key):
                raise ConfigError(f"augmentation.{key}", "needs an image-shaped input_shape (H, W) or (H, W, C)")
    return out


def image_active(cfg: dict, only: str | None = None) -> bool:
    checks = {
        "random_flip": cfg["random_flip"] is not None,
        "random_rotation": cfg["random_rotation"] > 0,
        "random_translation": cfg["random_translation"]["height_factor"] > 0
        or (cfg["random_translation"]["width_factor"] or 0) > 0,
        "random_zoom": cfg["random_zoom"]["height_factor"] > 0 or (cfg["random_zoom"]["width_factor"] or 0) > 0,
    }
    return checks[only] if only else any(checks.values())


def active(cfg: dict) -> bool:
    return cfg["gaussian_noise"] > 0 or image_active(cfg)


def _reflect(idx: np.ndarray, size: int) -> np.ndarray:
    """Integer indices folded into [0, size) by half-sample symmetric reflection."""
    period = 2 * size
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - 1 - idx, idx)


class Augmenter:
    """Applies one normalized augmentation config to batches of shape (N, *input_shape)."""

    def __init__(self, cfg: dict, input_shape: tuple[int, ...]):
        self.cfg = cfg
        self.input_shape = tuple(input_shape)
        self.image = image_active(cfg)
        self.warp = self.image and (cfg["random_rotation"] > 0 or image_active(cfg, "random_translation")
                                    or image_active(cfg, "random_zoom"))

    def __call__(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
        """Augment batch ``x`` into ``out`` (same shape); draws only from ``rng``."""
        np.copyto(out, x)
        n = x.shape[0]
        cfg = self.cfg
        if self.image:
            img = out.reshape((n,) + self.input_shape)
            flip = cfg["random_flip"]
            if flip in ("horizontal", "horizontal_and_vertical"):
                sel = rng.random(n) < 0.5
                img[sel] = img[sel][:, :, ::-1]
            if flip in ("vertical", "horizontal_and_vertical"):
                sel = rng.random(n) < 0.5
                img[sel] = img[sel][:, ::-1]
            if self.warp:
                img[...] = self._warp(img, rng)
        if cfg["gaussian_noise"] > 0:
            noise = rng.standard_normal(out.shape, dtype=out.dtype)
            noise *= cfg["gaussian_noise"]
            out += noise
        return out

    def _warp(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w = img.shape[:3]
        cfg = self.cfg
        theta = rng.uniform(-1.0, 1.0, n) * (cfg["random_rotation"] * 2.0 * math.pi)
        tr = cfg["random_translation"]
        dy = rng.uniform(-1.0, 1.0, n) * (tr["height_factor"] * h)
        dx = rng.uniform(-1.0, 1.0, n) * ((tr["width_factor"] or 0.0) * w)
        zm = cfg["random_zoom"]
        zh = 1.0 + rng.uniform(-1.0, 1.0, n) * zm["height_factor"]
        zw = zh if zm["width_factor"] is None else 1.0 + rng.uniform(-1.0, 1.0, n) * zm["width_factor"]
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
        yy, xx = yy.ravel()[None, :], xx.ravel()[None, :]
        cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
        # output pixel -> source position: undo translation, rotate, scale about the centre
        ry, rx = yy - dy[:, None], xx - dx[:, None]
        sy = (cos * ry - sin * rx) * zh[:, None] + cy
        sx = (sin * ry + cos * rx) * zw[:, None] + cx
        y0 = np.floor(sy)
        x0 = np.floor(sx)
        wy = (sy - y0).astype(img.dtype)
        wx = (sx - x0).astype(img.dtype)
        y0 = y0.astype(np.intp)
        x0 = x0.astype(np.intp)
        ya, yb = _reflect(y0, h), _reflect(y0 + 1, h)
        xa, xb = _reflect(x0, w), _reflect(x0 + 1, w)
        flat = img.reshape(n, h * w, -1)

        def gather(yi, xi):
            return np.take_along_axis(flat, (yi * w + xi)[:, :, None], axis=1)

        wy, wx = wy[:, :, None], wx[:, :, None]
        top = gather(ya, xa) * (1 - wx) + gather(ya, xb) * wx
        bottom = gather(yb, xa) * (1 - wx) + gather(yb, xb) * wx
        return (top * (1 - wy) + bottom * wy).reshape(img.shape)
