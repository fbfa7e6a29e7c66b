"""Decode one image file by its content (never its extension) into 8-bit RGB, or reject it.

Every rejection carries a short reason a person can act on; every quirk that was
repaired (alpha, palette, 16-bit, EXIF rotation, colour profile) is recorded as a flag.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# The format each common extension promises; a mismatch is reported, never trusted.
EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
TINY_SIDE = 32  # images this small are kept (if >= min_side) but flagged in the report
_SRGB = ImageCms.createProfile("sRGB")


class RejectedImage(Exception):
    """The file cannot be used; `str(error)` is the reason shown in the report, `kind` what
    went wrong: 'not_image', 'bomb', 'corrupt' (empty, truncated, undecodable) or 'too_small'."""

    def __init__(self, reason: str, kind: str = "corrupt") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied
    format: str
    mode: str  # the mode as stored in the file, before conversion
    flags: list[str] = field(default_factory=list)


def decode_image(
    data: bytes,
    name: str,
    *,
    min_side: int,
    max_pixels: int,
    alpha_background: tuple[int, int, int],
) -> DecodedImage:
    """Decode `data` (the bytes of file `name`) or raise RejectedImage with the reason."""
    if not data:
        raise RejectedImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise RejectedImage(
                "not an image: content matches no known image format", "not_image"
            ) from None
        except Image.DecompressionBombError as error:
            raise RejectedImage(f"decompression bomb: {error}", "bomb") from None
        except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file
            raise RejectedImage(f"truncated or corrupt header: {error}") from None
        width, height = image.size
        if width * height > max_pixels:
            raise RejectedImage(
                f"decompression bomb: {width}x{height} = {width * height:,} pixels "
                f"> limit {max_pixels:,}",
                "bomb",
            )
        try:
            image.load()
        except Exception as error:  # noqa: BLE001 - truncated or corrupt data
            raise RejectedImage(f"truncated or corrupt {image.format} data: {error}") from None

    fmt = image.format or "unknown"
    flags: list[str] = []
    expected = EXTENSION_FORMATS.get(PurePath(name).suffix.lower())
    if expected != fmt:
        flags.append("ext_mismatch")
    if getattr(image, "n_frames", 1) > 1:
        flags.append("animated")  # first frame only
    mode = image.mode
    image = _apply_exif_orientation(image, flags)
    if min(image.size) < min_side:
        raise RejectedImage(
            f"too small: {image.size[0]}x{image.size[1]} px (shorter side < {min_side} px)",
            "too_small",
        )
    if min(image.size) < TINY_SIDE:
        flags.append("tiny")
    rgb = _to_rgb(image, alpha_background, flags)
    return DecodedImage(rgb=rgb, format=fmt, mode=mode, flags=flags)


def _apply_exif_orientation(image: Image.Image, flags: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            flags.append("exif_rotated")
            return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        flags.append("bad_exif")
    return image


def _to_rgb(image: Image.Image, background: tuple[int, int, int], flags: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        flags.append("palette")
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        flags.append("high_bit_depth")
        image = Image.fromarray(_scale_to_uint8(np.asarray(image)))
    elif mode in ("1", "L", "LA", "La"):
        flags.append("grayscale")
    elif mode == "CMYK":
        flags.append("cmyk")

    profile = image.info.get("icc_profile")
    if profile and image.mode in ("RGB", "RGBA", "CMYK"):
        image = _to_srgb(image, profile, flags)

    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            flags.append("alpha_flattened")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _to_srgb(image: Image.Image, profile: bytes, flags: list[str]) -> Image.Image:
    """Honour an embedded colour profile so colours match what viewers show."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode)
    except Exception:  # noqa: BLE001 - an unusable profile: keep the raw values
        flags.append("bad_icc_profile")
        return image
    flags.append("icc_converted")
    return converted


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    top = values.max(initial=0.0)
    if top <= 1.0:  # float images in [0, 1]
        values = values * 255.0
    elif top > 255.0:  # 16-bit range
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
