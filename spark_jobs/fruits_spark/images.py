"""What the model sees of an upload (its format and size come from ``fruits_contract.headers``).

- ``model_pixels``: the full decode, on the cluster. Upright (EXIF Orientation, all 8 values;
  pillow-heif already turns HEIC upright and resets the tag, so it is never turned twice), the
  largest centred square, transparent pixels on white, 224x224 bicubic. JPEGs are decoded at the
  smallest libjpeg scale (1/8, 1/4, 1/2) that keeps at least twice 224 on the square's side; the
  other formats have no reduced decode (neither Pillow nor pillow-heif exposes libwebp's or
  libheif's scaling), so their square is first box-reduced by a whole factor to no less than twice
  224, the same rule after the decode instead of inside it.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from fruits_contract.headers import HEIF, JPEG, PNG, WEBP, RejectedImage, sniff

IMAGE_SIZE = 224
# The bicubic resize sees at least this many source pixels per output pixel and, on large photos,
# not many more: libjpeg's reduced decode keeps DRAFT_MIN_SIDE on the crop's side, Pillow's
# reducing_gap box-reduces the others to no less than that (cosine >= 0.999 to a full decode).
REDUCING_GAP = 2
DRAFT_MIN_SIDE = REDUCING_GAP * IMAGE_SIZE
ORIENTATION_TAG = 0x0112
# The Pillow plugins each accepted format may be opened with (MPO: Pillow's name for a
# multi-picture JPEG; HEIF: pillow-heif's opener).
PILLOW_FORMATS = {JPEG: ("JPEG", "MPO"), PNG: ("PNG",), WEBP: ("WEBP",), HEIF: ("HEIF",)}


# ---------------------------------------------------------------------------
# Pixels: what the model sees
# ---------------------------------------------------------------------------
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def _to_rgb(img):
    """RGB, with transparent pixels composited on white and high bit depths scaled, not clipped."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16/32-bit grey: convert("RGB") would clip everything above 255 to white.
        pixels = np.asarray(img, dtype=np.uint32)
        if img.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels >> 8
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info) \
            or (img.mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def draft_request(width: int, height: int) -> tuple[int, int]:
    """The size to ask Pillow's draft() for so that the centred square keeps DRAFT_MIN_SIDE pixels.

    draft() picks the largest libjpeg scale (1/8..1) whose result is at least the size asked on
    both sides: asking for the whole image scaled so its short side is DRAFT_MIN_SIDE does that."""
    short = min(width, height)
    if short <= DRAFT_MIN_SIDE:
        return width, height
    return -(-width * DRAFT_MIN_SIDE // short), -(-height * DRAFT_MIN_SIDE // short)


def centre_square(img):
    """The largest centred square, cropped: a resize with a box would also weigh the pixels just
    outside it."""
    width, height = img.size
    if width == height:
        return img
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return img.crop((left, top, left + side, top + side))


def upright(img):
    """``img`` turned as its EXIF Orientation says; ``img`` itself when there is nothing to turn
    (ImageOps.exif_transpose would copy it: 22 ms for a 12 MP photo)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(img) if img.getexif().get(ORIENTATION_TAG, 1) in range(2, 9) else img


def model_pixels(content: bytes, *, reduced_decode: bool = True) -> np.ndarray:
    """Bytes of an accepted image -> uint8 RGB (224, 224, 3): upright, centred square, on white, bicubic.

    ``reduced_decode=False`` decodes and resizes at full size (the reference the bench and the
    tests compare with). Raises RejectedImage with a reason for anything else.
    """
    from PIL import Image, UnidentifiedImageError

    if content is None or len(content) == 0:
        raise RejectedImage("empty", "zero bytes")
    image_format = sniff(bytes(content[:64]))
    if image_format == HEIF:
        _register_heif()
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse them all.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=PILLOW_FORMATS[image_format]) as img:
                if image_format == JPEG and reduced_decode:
                    img.draft(img.mode, draft_request(*img.size))
                img.load()
                square = _to_rgb(centre_square(upright(img)))
                rgb = square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC,
                                    reducing_gap=REDUCING_GAP if reduced_decode else None)
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise RejectedImage("not_an_image",
                            f"{image_format} by its first bytes, but no decoder opens it: {exc}") from None
    except Exception as exc:  # any other decoder failure is bad content, never a job failure
        text = str(exc).lower()
        truncated = any(words in text for words in ("truncated", "too short", "end of file", "outside of file"))
        detail = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise RejectedImage("truncated" if truncated else "decode_error", f"{image_format}: {detail}") from None
