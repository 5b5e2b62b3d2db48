"""Any image file -> an RGB uint8 array, every Pillow mode handled explicitly.

`read_rgb(path)` returns (array (H, W, 3) uint8, conversion or None). The conversion is a short
text such as ``"I;16 (16-bit grey scaled to 8 bit)"`` whenever the pixels were changed on the way,
so that ingest can report it. Modes:

  RGB                       as is
  1, L                      grey replicated to R, G, B
  I;16, I;16L, I;16B, I;16N 16-bit grey scaled to 8 bit: round(v / 257), never clipped
  I                         the same when the file is a 16-bit source (PNG, PGM, 16-bit TIFF)
  RGBA, LA, PA, RGBa, La    alpha composited on white (the histology background), then RGB
  P, L, RGB + transparency  the transparent entry composited on white
  P                         palette to RGB
  CMYK                      embedded ICC profile -> sRGB (PIL.ImageCms); without one
                            R = 255(1-C)(1-K), G = 255(1-M)(1-K), B = 255(1-Y)(1-K) (Pillow's own)
  YCbCr                     to RGB
  anything else             rejected: F (float), I with 32-bit values, LAB, HSV, RGBX, CMYK
                            variants, multi-frame files, ...

EXIF orientation (tag 274) is applied (PIL.ImageOps.exif_transpose) when present.
The size is not checked here; histaug.data.load_folder_images checks 96x96.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageCms, ImageOps

from .utils import PipelineError

FIX = "save it as an 8-bit RGB PNG or JPEG (e.g. PIL: Image.open(f).convert('RGB').save('<id>.png'))"
ORIENTATION_TAG = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
REJECT_REASONS = {
    "F": "32-bit floating-point values",
    "I": "32-bit integer values",
    "LAB": "CIELAB colour",
    "HSV": "HSV colour",
    "RGBX": "RGB with a padding channel",
}


class UnsupportedImage(PipelineError):
    """An image whose mode (or frame count) has no safe conversion to 8-bit RGB."""

    def __init__(self, path, mode: str, reason: str):
        self.path, self.mode, self.reason = str(path), mode, reason
        super().__init__(f"{path}: {reason} (Pillow mode {mode}) cannot be converted safely to 8-bit RGB; {FIX}")


def read_rgb(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """The image at `path` as (H, W, 3) uint8 RGB, and what was converted (None = nothing).

    Raises UnsupportedImage for modes without a safe conversion and multi-frame files; Pillow's own
    errors (unreadable or truncated files) pass through.
    """
    with Image.open(path) as im:
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            raise UnsupportedImage(path, im.mode, f"{frames} frames (a multi-frame or multi-page file)")
        im.load()
        return to_rgb(im, source=str(path))


def to_rgb(im: Image.Image, source: str = "image") -> tuple[np.ndarray, str | None]:
    """`im` (opened from a file, or made in memory) as (H, W, 3) uint8 RGB plus the conversion note."""
    mode = im.mode
    sixteen_bit = _is_16bit_source(im)  # decided on the file's own metadata, before any transpose
    orientation = _orientation(im)
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
    arr, note = _convert(im, mode, sixteen_bit, source)
    if orientation not in (None, 1):
        turn = f"EXIF orientation {orientation} applied"
        note = f"{note}; {turn}" if note else turn
    return arr, note


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(ORIENTATION_TAG)
    except Exception:  # a malformed EXIF block: leave the image as stored
        return None
    return int(value) if value is not None else None


def _is_16bit_source(im: Image.Image) -> bool:
    """True when a mode-I image holds 16-bit samples (PNG and PGM have at most 16 bits; TIFF says)."""
    fmt = (im.format or "").upper()
    if fmt in ("PNG", "PPM"):
        return True
    if fmt == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return tuple(bits) == (16,)
    return False


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=2)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(values, np.float64) / 257.0).astype(np.uint8)


def _on_white(rgb: np.ndarray, alpha: np.ndarray, premultiplied: bool = False) -> np.ndarray:
    """Composite colour with alpha (0..255) over a white background."""
    rgb = np.asarray(rgb, np.float64)
    a = np.asarray(alpha, np.float64)[..., None]
    out = rgb + (255.0 - a) if premultiplied else 255.0 - (255.0 - rgb) * a / 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _convert(im: Image.Image, mode: str, sixteen_bit: bool, source: str) -> tuple[np.ndarray, str | None]:
    transparency = "transparency" in im.info
    if mode in ("1", "L", "P", "RGB") and transparency:
        rgba = np.asarray(im.convert("RGBA"))
        return _on_white(rgba[..., :3], rgba[..., 3]), f"{mode} with a transparent colour (composited on white)"
    if mode == "RGB":
        return np.asarray(im, np.uint8).copy(), None
    if mode == "L":
        return _grey_to_rgb(np.asarray(im)), "L (greyscale replicated to RGB)"
    if mode == "1":
        return _grey_to_rgb(np.asarray(im.convert("L"))), "1 (black/white replicated to RGB)"
    if mode in SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale_16bit(np.asarray(im))), f"{mode} (16-bit grey scaled to 8 bit)"
    if mode == "I":
        values = np.asarray(im)
        if not sixteen_bit:
            raise UnsupportedImage(source, mode, "32-bit integer grey values (not a 16-bit file)")
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImage(source, mode, f"integer values {values.min()}..{values.max()} beyond 16 bit")
        return _grey_to_rgb(_scale_16bit(values)), "I (16-bit grey scaled to 8 bit)"
    if mode == "RGBA":
        a = np.asarray(im)
        return _on_white(a[..., :3], a[..., 3]), "RGBA (alpha composited on white)"
    if mode == "RGBa":
        a = np.asarray(im)
        return _on_white(a[..., :3], a[..., 3], premultiplied=True), "RGBa (premultiplied alpha composited on white)"
    if mode in ("LA", "La"):
        a = np.asarray(im)
        grey = np.repeat(a[..., :1], 3, axis=2)
        kind = "premultiplied alpha" if mode == "La" else "alpha"
        return _on_white(grey, a[..., 1], premultiplied=mode == "La"), f"{mode} (grey with {kind} composited on white)"
    if mode == "PA":
        a = np.asarray(im.convert("RGBA"))
        return _on_white(a[..., :3], a[..., 3]), "PA (palette with alpha composited on white)"
    if mode == "P":
        return np.asarray(im.convert("RGB"), np.uint8).copy(), "P (palette to RGB)"
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode == "YCbCr":
        return np.asarray(im.convert("RGB"), np.uint8).copy(), "YCbCr (converted to RGB)"
    raise UnsupportedImage(source, mode, REJECT_REASONS.get(mode, f"mode {mode}"))


def _cmyk_to_rgb(im: Image.Image) -> tuple[np.ndarray, str]:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            return np.asarray(out, np.uint8).copy(), "CMYK (embedded ICC profile to sRGB)"
        except (ImageCms.PyCMSError, OSError, ValueError):
            return (np.asarray(im.convert("RGB"), np.uint8).copy(),
                    "CMYK (embedded ICC profile unusable; R=255(1-C)(1-K), G=255(1-M)(1-K), B=255(1-Y)(1-K))")
    # Pillow's CMYK -> RGB is exactly R = 255(1-C)(1-K) etc., rounded (checked in tests/test_images.py)
    note = "CMYK (no ICC profile; R=255(1-C)(1-K), G=255(1-M)(1-K), B=255(1-Y)(1-K))"
    return np.asarray(im.convert("RGB"), np.uint8).copy(), note


def summarize_conversions(conversions: dict[str, list[str]], first: int = 5) -> list[str]:
    """Log lines "converted N image(s) from <note>: id, id, ..." for {note: [ids]}."""
    lines = []
    for note, ids in sorted(conversions.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        more = f", ... ({len(ids) - first} more)" if len(ids) > first else ""
        lines.append(f"converted {len(ids)} image(s) from {note}: {', '.join(ids[:first])}{more}")
    return lines
