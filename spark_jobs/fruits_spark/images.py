"""What the model sees of an upload (its format and size come from ``fruits_contract.headers``).

- ``model_pixels``: the decode, on the cluster. Upright (EXIF Orientation, all 8 values;
  pillow-heif already turns HEIC upright and resets the tag, so it is never turned twice), the
  largest centred square, transparent pixels on white, 224x224 bicubic. Each format is decoded as
  small as keeps the features (cosine >= 0.999 to a full-size decode; docs/phone-photos.md):
  - JPEG at the smallest libjpeg scale (1/8, 1/4, 1/2) that keeps twice 224 on the square's side;
  - WebP scaled inside libwebp (through libvips: Pillow does not expose libwebp's scaling) to
    three times 224 on the short side: at twice, the features fell to cosine 0.998;
  - PNG decoded whole (it has no reduced decode), its square resized with its alpha attached and
    put on white only at 224: compositing 12 MP on white first cost a third of the time;
  - HEIC decoded whole (libheif's only smaller pictures are embedded thumbnails, which change
    the features: cosine 0.95-0.994), its square box-reduced to no less than twice 224 before the
    bicubic.
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
# WebP's scaled decode and PNG's alpha-attached resize keep three times 224 (measured on 12 MP
# phone photos: cosine 0.9995 at three times, 0.998 at twice for WebP).
SCALED_DECODE_GAP = 3
WEBP_MIN_SIDE = SCALED_DECODE_GAP * IMAGE_SIZE
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


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info) \
        or (img.mode in ("L", "RGB") and "transparency" in img.info)


def _on_white(rgba):
    from PIL import Image

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


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
    if _has_alpha(img):
        return _on_white(img.convert("RGBA"))
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

    ``reduced_decode=False`` decodes and resizes at full size, through Pillow for every format (the
    reference the bench and the tests compare with). Raises RejectedImage with a reason for anything else.
    """
    from PIL import Image, UnidentifiedImageError

    if content is None or len(content) == 0:
        raise RejectedImage("empty", "zero bytes")
    image_format = sniff(bytes(content[:64]))
    if image_format == WEBP and reduced_decode:
        return _webp_model_pixels(content)
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
                square = centre_square(upright(img))
                if reduced_decode and image_format == PNG and _has_alpha(square):
                    return _model_size_on_white(square.convert("RGBA"), SCALED_DECODE_GAP)
                rgb = _to_rgb(square).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC,
                                             reducing_gap=REDUCING_GAP if reduced_decode else None)
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise RejectedImage("not_an_image",
                            f"{image_format} by its first bytes, but no decoder opens it: {exc}") from None
    except Exception as exc:  # any other decoder failure is bad content, never a job failure
        raise _decode_failure(image_format, exc) from None


def _decode_failure(image_format: str, exc: Exception) -> RejectedImage:
    text = str(exc).lower()
    truncated = any(words in text for words in ("truncated", "too short", "end of file", "outside of file",
                                                "premature end", "not enough data"))
    detail = str(exc).strip() if isinstance(exc, OSError) else f"{type(exc).__name__}: {str(exc).strip()}"
    return RejectedImage("truncated" if truncated else "decode_error", f"{image_format}: {detail}")


def _model_size_on_white(rgba, reducing_gap: int | None) -> np.ndarray:
    """An RGBA square at 224, alpha attached through the resize (Pillow resizes it premultiplied),
    then on white: the same as on white first, on 224x224 pixels instead of millions."""
    from PIL import Image

    small = rgba.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=reducing_gap)
    return np.asarray(_on_white(small), dtype=np.uint8)


def _webp_model_pixels(content: bytes) -> np.ndarray:
    """A WebP scaled inside libwebp (libvips' webpload) to WEBP_MIN_SIDE on its short side, upright,
    centred square, bicubic to 224 in Pillow like the other formats."""
    import pyvips
    from PIL import Image

    _quiet_vips()
    try:
        header = pyvips.Image.webpload_buffer(content, fail_on="error")  # lazy: the header only
        width, height = header.width, header.height
        limit = Image.MAX_IMAGE_PIXELS
        if limit and width * height > limit:
            raise RejectedImage("decompression_bomb", f"Image size ({width * height} pixels) exceeds limit of "
                                                      f"{limit} pixels, could be decompression bomb DOS attack.")
        scale = min(1.0, WEBP_MIN_SIDE / min(width, height))
        image = pyvips.Image.webpload_buffer(content, scale=scale, fail_on="error").autorot()
        side = min(image.width, image.height)
        square = image.crop((image.width - side) // 2, (image.height - side) // 2, side, side)
        pixels = square.numpy()
    except pyvips.Error as exc:
        raise _decode_failure(WEBP, exc) from None
    if pixels.ndim == 2 or pixels.shape[2] in (1, 2):  # grey WebPs do not exist, but libvips may say so
        pixels = np.atleast_3d(pixels)[..., :1].repeat(3, axis=2)
    if pixels.shape[2] == 4:
        return _model_size_on_white(Image.fromarray(pixels, "RGBA"), None)
    rgb = Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")
    return np.asarray(rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC), dtype=np.uint8)


_VIPS_READY = False


def _quiet_vips() -> None:
    """One libvips thread per decode (each Spark task slot already has its core) and no operation
    cache (it would keep the last photos' buffers alive)."""
    global _VIPS_READY
    if not _VIPS_READY:
        import pyvips

        pyvips.concurrency_set(1)
        pyvips.cache_set_max(0)
        _VIPS_READY = True
