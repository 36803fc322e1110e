"""Phone-style uploads made from the sample (../shared/DESIGN.md, "Data on hand"): the tests' and the bench's.

A sample image fills the centred square of a 4:3 frame (4032x3024 by default: a 12 MP photo),
on the sample's own white background, with mild noise so that it compresses like a photo. It is
then written as the app's users' phones write it: JPEG, JPEG stored sideways with an EXIF
Orientation tag, HEIC, WebP, PNG with an alpha channel, MPO. A plain module (not a conftest) so
that test files in any folder and bench/ can import it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PHONE_SIZE = (4032, 3024)
ORIENTATION_TAG = 0x0112
# How a camera stores an upright picture for each EXIF orientation: the inverse of the turn
# that Pillow's ImageOps.exif_transpose applies to display it.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
KINDS = ("jpeg", "jpeg_sideways", "heic", "webp", "png_alpha")
SUFFIX = {"jpeg": ".jpg", "jpeg_sideways": ".jpg", "heic": ".heic", "webp": ".webp", "png_alpha": ".png",
          "mpo": ".jpg"}


def phone_frame(sample: Image.Image | Path, size=PHONE_SIZE, seed: int = 0, noise: int = 6) -> Image.Image:
    """The upright photo: ``sample`` scaled to the frame's short side, centred, with mild noise
    (+-``noise`` levels; 0 for files that must stay small, such as the demo's)."""
    if not isinstance(sample, Image.Image):
        sample = Image.open(sample)
    width, height = size
    side = min(width, height)
    frame = Image.new("RGB", size, (255, 255, 255))
    frame.paste(sample.convert("RGB").resize((side, side), Image.Resampling.BICUBIC),
                ((width - side) // 2, (height - side) // 2))
    pixels = np.asarray(frame, dtype=np.int16)
    jitter = np.random.default_rng(seed).integers(-noise, noise + 1, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels + jitter, 0, 255).astype(np.uint8))


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera writes for ``upright`` when it tags them with ``orientation``."""
    turn = STORE_FOR_ORIENTATION[orientation]
    return upright if turn is None else upright.transpose(turn)


def jpeg_bytes(upright: Image.Image, orientation: int = 1, quality: int = 90) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    sink = io.BytesIO()
    stored(upright, orientation).save(sink, "JPEG", quality=quality, exif=exif.tobytes())
    return sink.getvalue()


def heic_bytes(upright: Image.Image, quality: int = 50) -> bytes:
    """x265's fastest preset: 1-2 s for 12 MP instead of 30 s; what is measured is the decode."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    sink = io.BytesIO()
    upright.save(sink, "HEIF", quality=quality, enc_params={"preset": "ultrafast"})
    return sink.getvalue()


def webp_bytes(upright: Image.Image, quality: int = 85) -> bytes:
    sink = io.BytesIO()
    upright.save(sink, "WEBP", quality=quality)
    return sink.getvalue()


def png_alpha_bytes(upright: Image.Image) -> bytes:
    """A cut-out: the frame's white background made transparent (and its pixels set to black, so a
    decoder that drops the alpha instead of compositing on white sees another picture)."""
    rgba = upright.convert("RGBA")
    pixels = np.asarray(rgba).copy()
    background = (pixels[..., :3] >= 245).all(axis=2)
    pixels[background] = (0, 0, 0, 0)
    sink = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(sink, "PNG", optimize=True)
    return sink.getvalue()


def mpo_bytes(upright: Image.Image, quality: int = 90) -> bytes:
    """A multi-picture JPEG (what Pillow opens as MPO): the photo, then a smaller second picture."""
    sink = io.BytesIO()
    upright.save(sink, "MPO", quality=quality, save_all=True,
                 append_images=[upright.resize((upright.width // 4, upright.height // 4))])
    return sink.getvalue()


def upload_bytes(upright: Image.Image, kind: str) -> bytes:
    """``upright`` encoded as one of KINDS (or "mpo")."""
    if kind == "jpeg":
        return jpeg_bytes(upright)
    if kind == "jpeg_sideways":
        return jpeg_bytes(upright, orientation=6)
    if kind == "heic":
        return heic_bytes(upright)
    if kind == "webp":
        return webp_bytes(upright)
    if kind == "png_alpha":
        return png_alpha_bytes(upright)
    if kind == "mpo":
        return mpo_bytes(upright)
    raise ValueError(f"unknown kind {kind!r}; one of {KINDS + ('mpo',)}")


def sample_images(sample_dir: Path, count: int) -> list[Path]:
    """``count`` sample images spread over the labels (Test/<label>/*.jpg), in a stable order."""
    folders = sorted(p for p in (Path(sample_dir) / "Test").iterdir() if p.is_dir())
    per_label = [sorted(folder.glob("*.jpg")) for folder in folders]
    chosen, index = [], 0
    while len(chosen) < count and any(index < len(files) for files in per_label):
        chosen += [files[index] for files in per_label if index < len(files)]
        index += 1
    return chosen[:count]


def write_phone_uploads(sources: list[Path], root: Path, kinds=KINDS, size=PHONE_SIZE) -> list[Path]:
    """One upload per source under root/<label>/, the kinds taken in turn; returns the paths."""
    written = []
    for index, source in enumerate(sources):
        kind = kinds[index % len(kinds)]
        target = Path(root) / source.parent.name / f"{source.stem}_{kind}{SUFFIX[kind]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upload_bytes(phone_frame(source, size, seed=index), kind))
        written.append(target)
    return written


def hostile_uploads(uploads: dict[str, bytes]) -> dict[str, bytes]:
    """The issue's bad input, made from small good uploads (``uploads``: kind -> bytes, as
    conftest's phone_uploads): file name -> bytes."""
    import struct

    heic, jpeg = uploads["heic"], uploads["jpeg"]
    frame = jpeg.index(b"\xff\xc0")  # baseline SOF: length, precision, then height and width
    giant = bytearray(jpeg)
    giant[frame + 5:frame + 9] = struct.pack(">HH", 60000, 60000)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(png, "PNG")
    png = png.getvalue()
    # A zTXt chunk that claims 1 GiB right after IHDR (8-byte signature + 25-byte IHDR chunk),
    # followed by only a few bytes: the claim, not a gigabyte on disk.
    ztxt = struct.pack(">I", 1 << 30) + b"zTXt" + b"Comment\0\0" + b"x" * 64
    return {
        "truncated.heic": heic[:len(heic) // 2],
        "giant.jpg": bytes(giant),
        "ztxt_1gb.png": png[:33] + ztxt + png[33:],
        "zeros.heic": bytes(4096),
    }
