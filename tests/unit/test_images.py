"""What the model sees of an upload (fruits_spark.images): formats by content, upright, centred
square on white, JPEG draft decode; and the header parse validation relies on. No Spark."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from fruits_contract import headers
from fruits_spark import images
from fruits_spark.features import decode_image
from phone_photos import (KINDS, STORE_FOR_ORIENTATION, hostile_uploads, jpeg_bytes, phone_frame, png_alpha_bytes,
                          stored, upload_bytes)

HOSTILE_DECODE = {"truncated.heic": "truncated", "giant.jpg": "decompression_bomb", "ztxt_1gb.png": "truncated",
                  "zeros.heic": "not_an_image"}


def _todays_rgb(img):
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        pixels = np.asarray(img, dtype=np.uint32)
        if img.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels >> 8
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def todays_decode(content: bytes) -> np.ndarray:
    """The feature job's decode before phone photos (main at 81064eb), copied: open, load, RGB, 224 bicubic."""
    _to_rgb = _todays_rgb
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(content)) as img:
            img.load()
            return np.asarray(_to_rgb(img).resize((224, 224), Image.Resampling.BICUBIC), dtype=np.uint8)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    sink = io.BytesIO()
    image.save(sink, fmt, **options)
    return sink.getvalue()


def _asymmetric(size=(320, 240)) -> Image.Image:
    """No turn or flip of it looks like itself: a gradient across, another down, a block in one corner."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, np.full_like(x, 60)], axis=2).astype(np.uint8)
    pixels[10:70, 20:60] = (255, 255, 0)
    return Image.fromarray(pixels)


def _model():
    from fruits_contract.model import SHIPPED_MODEL_PATH
    from fruits_spark.feature_model import LiteRTModel
    from fruits_spark.features import preprocess

    model = LiteRTModel(SHIPPED_MODEL_PATH.read_bytes())
    return lambda pixels: model.predict(preprocess(np.stack(pixels).astype(np.float32)))


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_square_images_get_exactly_todays_pixels(images_dir):
    """Fruits-360 (100x100 JPEG) and square images of any mode without alpha: bit-identical."""
    contents = [p.read_bytes() for p in sorted(images_dir.rglob("*.jpg"))[:12]]
    rng = np.random.default_rng(5)
    square = Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    contents += [_encoded(square, "PNG"), _encoded(square.convert("L"), "PNG"), _encoded(square.convert("P"), "PNG"),
                 _encoded(square, "WEBP", lossless=True), _encoded(square.convert("CMYK"), "JPEG")]
    for content in contents:
        assert np.array_equal(decode_image(content), todays_decode(content))


@pytest.mark.parametrize("orientation", sorted(STORE_FOR_ORIENTATION))
def test_every_exif_orientation_gives_the_upright_picture(orientation):
    upright = _asymmetric()
    expected = images.model_pixels(_encoded(upright, "PNG"))
    got = images.model_pixels(jpeg_bytes(upright, orientation, quality=95))
    assert np.abs(got.astype(int) - expected).mean() < 2.5
    if orientation != 1:  # what a decoder that ignores the tag sees is another picture
        as_stored = images.model_pixels(_encoded(stored(upright, orientation), "PNG"))
        assert np.abs(as_stored.astype(int) - expected).mean() > 20


def test_a_sideways_photo_gives_the_features_of_the_upright_one(phone_source):
    predict = _model()
    upright = phone_frame(phone_source, (640, 480))
    reference = images.model_pixels(jpeg_bytes(upright, 1, quality=95))
    decoded = [images.model_pixels(jpeg_bytes(upright, o, quality=95)) for o in sorted(STORE_FOR_ORIENTATION)]
    features = predict([reference, *decoded, todays_decode(jpeg_bytes(upright, 6, quality=95))])
    assert min(_cosine(features[0], f) for f in features[1:-1]) > 0.995
    assert _cosine(features[0], features[-1]) < 0.99  # today's decode of the sideways photo


def test_heif_is_turned_once(phone_source):
    """pillow-heif applies the HEIF transform (and turns the EXIF tag into it): not turned again."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    upright = phone_frame(phone_source, (320, 240))
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6
    heic = _encoded(stored(upright, 6), "HEIF", exif=exif.tobytes(), quality=90)
    assert headers.read_header(heic, len(heic)) == headers.Header("HEIF", 240, 320)  # stored sideways
    got = images.model_pixels(heic)
    expected = images.model_pixels(_encoded(upright, "PNG"))
    assert np.abs(got.astype(int) - expected).mean() < 4


def test_a_4_3_photo_shows_its_centred_square_not_a_squashed_frame():
    frame = _asymmetric((400, 300))
    got = images.model_pixels(_encoded(frame, "PNG"))
    square = frame.crop((50, 0, 350, 300)).resize((224, 224), Image.Resampling.BICUBIC)
    assert np.array_equal(got, np.asarray(square))
    assert np.array_equal(images.model_pixels(_encoded(frame.rotate(90, expand=True), "PNG")),
                          np.asarray(frame.rotate(90, expand=True).crop((0, 50, 300, 350))
                                     .resize((224, 224), Image.Resampling.BICUBIC)))


def test_transparent_pixels_are_white(phone_source):
    upright = phone_frame(phone_source, (400, 300))
    cutout = png_alpha_bytes(upright)  # background transparent, its colour black
    got = images.model_pixels(cutout)
    assert np.abs(got.astype(int) - images.model_pixels(_encoded(upright, "PNG"))).mean() < 3
    assert got[:8, :8].min() == 255  # a corner of the frame's background
    assert todays_decode(cutout)[:8, :8].max() < 40  # dropping alpha showed black


def test_a_12mp_jpeg_is_decoded_at_a_quarter_within_cosine_0999_of_a_full_decode(phone_photo_12mp, sample_dir):
    if sample_dir is None:
        pytest.skip("FRUITS_SAMPLE_DIR is not set: a real sample photo is needed to judge feature quality")
    with Image.open(io.BytesIO(phone_photo_12mp)) as img:
        img.draft(img.mode, images.draft_request(*img.size))
        assert img.size == (756, 1008)  # 1/4 of 3024x4032: the smallest scale keeping >= 448 on the short side
    predict = _model()
    reduced, full = (images.model_pixels(phone_photo_12mp, reduced_decode=flag) for flag in (True, False))
    reduced_features, full_features = predict([reduced, full])
    assert _cosine(reduced_features, full_features) >= 0.999


@pytest.mark.parametrize("kind", ["heic", "webp", "png_alpha"])
def test_a_12mp_heic_webp_or_png_at_reduced_size_is_within_cosine_0999_of_a_full_decode(kind, phone_source, sample_dir):
    """HEIC: its 3024-pixel square box-reduced to 504 before the bicubic. WebP: scaled inside libwebp
    to 672 on the short side. PNG with alpha: resized with its alpha attached, on white at 224."""
    if sample_dir is None:
        pytest.skip("FRUITS_SAMPLE_DIR is not set: a real sample photo is needed to judge feature quality")
    content = upload_bytes(phone_frame(phone_source), kind)
    reduced, full = (images.model_pixels(content, reduced_decode=flag) for flag in (True, False))
    assert not np.array_equal(reduced, full)  # the reduced path is taken
    reduced_features, full_features = _model()([reduced, full])
    assert _cosine(reduced_features, full_features) >= 0.999


def test_webp_is_scaled_inside_libwebp_to_three_times_the_model_size(phone_source, monkeypatch):
    import pyvips

    asked = []
    load = pyvips.Image.webpload_buffer
    monkeypatch.setattr(pyvips.Image, "webpload_buffer", lambda content, **options: asked.append(options) or
                        load(content, **options))
    images.model_pixels(upload_bytes(phone_frame(phone_source, (4032, 3024)), "webp"))
    assert [options.get("scale") for options in asked] == [None, images.WEBP_MIN_SIDE / 3024]


@pytest.mark.parametrize("orientation", sorted(STORE_FOR_ORIENTATION))
def test_a_webp_with_any_exif_orientation_gives_the_upright_picture(orientation):
    upright = _asymmetric((1600, 1200))  # more than WEBP_MIN_SIDE: the scaled decode is taken
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = orientation
    webp = _encoded(stored(upright, orientation), "WEBP", lossless=True, exif=exif.tobytes())
    expected = images.model_pixels(_encoded(upright, "PNG"))
    assert np.abs(images.model_pixels(webp).astype(int) - expected).mean() < 2.5
    assert np.array_equal(images.model_pixels(webp, reduced_decode=False),  # Pillow's reference turns it too
                          images.model_pixels(_encoded(upright, "PNG"), reduced_decode=False))


def test_a_transparent_webp_is_on_white(phone_source):
    upright = phone_frame(phone_source, (1600, 1200))
    cutout = Image.open(io.BytesIO(png_alpha_bytes(upright)))
    got = images.model_pixels(_encoded(cutout, "WEBP", lossless=True))
    assert got[:8, :8].min() >= 250  # the transparent background, black under its alpha
    assert np.abs(got.astype(int) - images.model_pixels(_encoded(upright, "PNG"))).mean() < 3


@pytest.mark.parametrize("width,height,scale", [(100, 100, 1), (448, 600, 1), (900, 1200, 2), (1800, 2400, 4),
                                                (4000, 3584, 8), (4000, 3583, 4)])
def test_draft_keeps_at_least_twice_the_model_size_on_the_short_side(width, height, scale):
    content = _encoded(Image.new("RGB", (width, height), (90, 120, 30)), "JPEG")
    with Image.open(io.BytesIO(content)) as img:
        img.draft("RGB", images.draft_request(width, height))
        assert img.size == (-(-width // scale), -(-height // scale))
        assert min(img.size) >= min(min(width, height), images.DRAFT_MIN_SIDE)


def test_every_phone_kind_decodes_and_reads_its_header(phone_uploads):
    for kind in (*KINDS, "mpo"):
        content = phone_uploads[kind]
        header = headers.read_header(content[:headers.HEADER_BYTES], len(content))
        assert (header.width, header.height) == ((480, 640) if kind == "jpeg_sideways" else (640, 480)), kind
        with Image.open(io.BytesIO(content)) if kind != "heic" else _heif_open(content) as img:
            assert img.format in images.PILLOW_FORMATS[header.format], kind
        assert decode_image(content).shape == (224, 224, 3)


def _heif_open(content):
    import pillow_heif

    pillow_heif.register_heif_opener()
    return Image.open(io.BytesIO(content))


@pytest.mark.parametrize("name", sorted(HOSTILE_DECODE))
def test_hostile_files_are_rejected_by_the_decoder_with_a_reason(phone_uploads, name):
    content = hostile_uploads(phone_uploads)[name]
    with pytest.raises(headers.RejectedImage) as caught:
        decode_image(content)
    assert caught.value.reason == HOSTILE_DECODE[name] and caught.value.detail


@pytest.mark.parametrize("content,named", [
    (b"GIF89a" + bytes(100), "a GIF image"), (b"%PDF-1.7\n" + bytes(100), "a PDF document"),
    (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1" + bytes(100), "an AVIF image"),
    (b"\0\0\0\x1cftypavis\0\0\0\0mif1msf1" + bytes(100), "an AVIF image"),
    (b"\0\0\0\x18ftypqt  \0\0\0\0qt  " + bytes(100), "brand 'qt  '"),
    (b"RIFF\x10\0\0\0WAVEfmt " + bytes(100), "type 'WAVE', not WebP"), (bytes(100), "only zero bytes"),
    (b"hello, I am text" * 10, "text"),
])
def test_what_is_not_accepted_is_named(content, named):
    with pytest.raises(headers.RejectedImage) as caught:
        headers.sniff(content)
    assert caught.value.reason == "not_an_image" and named in caught.value.detail


def test_a_header_cut_by_the_first_read_asks_for_more_and_a_file_ending_there_is_refused(phone_uploads):
    content = phone_uploads["jpeg"]
    with pytest.raises(headers.HeaderNeedsMore):
        headers.read_header(content[:40], len(content))
    with pytest.raises(headers.RejectedImage, match="ends inside its header|claims"):
        headers.read_header(content[:40], 40)
    reads = []

    def read_range(start, end):
        reads.append((start, end))
        return content[start:end]

    assert headers.header_of(read_range, len(content), first=40).format == "JPEG"
    assert reads[0] == (0, 40) and reads[1][0] == 40
