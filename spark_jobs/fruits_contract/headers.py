"""What an upload is, from its first bytes: format, width and height, with no image library.

One definition for Airflow's validation (a ranged read of the first 64 KiB per upload, more only
when ``HeaderNeedsMore`` says how much) and the feature job (which decodes the pixels).

- Formats by content, never by name: ``sniff`` reads the first bytes. Accepted: JPEG (MPO
  included: a JPEG with more pictures after the first), PNG, WebP, HEIC/HEIF.
- ``read_header``: format, width and height from the first bytes only. The containers are parsed
  here (JPEG SOF markers, PNG IHDR, RIFF VP8/VP8L/VP8X, ISOBMFF ispe) because Pillow's WebP plugin
  and pillow-heif read the whole file to open it. Width and height are as stored, before EXIF
  orientation (a sideways-stored photo reports 4032x3024 either way).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_BYTES = 64 * 1024
# A header that needs more than this (JPEG metadata blocks, an ISOBMFF meta box) is not a photo.
MAX_HEADER_BYTES = 4 * 1024 * 1024

JPEG, PNG, WEBP, HEIF = "JPEG", "PNG", "WEBP", "HEIF"
ACCEPTED_FORMATS = (JPEG, PNG, WEBP, HEIF)
ACCEPTED_TEXT = "JPEG, PNG, WebP or HEIC/HEIF"
# The names phones give photos: which files of a local folder `make demo` uploads (beside them
# may lie notes and licenses). The pipeline itself never looks at a name.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
# ISOBMFF brands of still HEIF images (HEVC-coded; pillow-heif decodes these).
AV1_BRANDS = {b"avif", b"avis"}  # AVIF: HEIF's container around AV1, which pillow-heif 1.x does not decode
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"}


class RejectedImage(Exception):
    """Content that is not a usable image; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Header:
    format: str  # one of ACCEPTED_FORMATS
    width: int  # as stored, before EXIF orientation
    height: int


class HeaderNeedsMore(Exception):
    """The header continues past the bytes given; ``needed`` is how many bytes from the start will do."""

    def __init__(self, needed: int):
        super().__init__(f"header needs {needed} bytes")
        self.needed = needed


def _isobmff_brands(head: bytes) -> tuple[bytes, list[bytes]] | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    size = struct.unpack(">I", head[:4])[0]
    end = min(max(size, 16), len(head))
    return head[8:12], [head[i:i + 4] for i in range(16, end - 3, 4)]


def _what_else(head: bytes) -> str:
    """A name for content that is none of the accepted formats, for the rejection's detail."""
    known = ((b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\0", "a TIFF image"), (b"MM\0*", "a TIFF image"),
             (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data"),
             (b"8BPS", "a Photoshop document"), (b"\0\0\1\0", "a Windows icon"))
    for magic, name in known:
        if head.startswith(magic):
            return name
    brands = _isobmff_brands(head)
    if brands:
        major, compatible = brands
        if major in AV1_BRANDS or b"avif" in compatible:
            return "an AVIF image (AV1-coded HEIF, not accepted)"
        return (f"an ISOBMFF file of brand {major.decode('latin-1')!r} "
                "(a video or another container, not a still HEIF image)")
    if head.startswith(b"RIFF"):
        return f"a RIFF file of type {head[8:12].decode('latin-1')!r}, not WebP"
    if not head.strip(b"\0"):
        return "only zero bytes"
    sample = head[:512]
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in sample):
        return "text"
    return f"unknown content starting with {head[:8].hex(' ')}"


def sniff(head: bytes) -> str:
    """The accepted format of content starting with ``head`` (16 bytes or more), else RejectedImage("not_an_image")."""
    if not head:
        raise RejectedImage("empty", "zero bytes")
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    brands = _isobmff_brands(head)
    if brands and brands[0] not in AV1_BRANDS and (brands[0] in HEIF_BRANDS or HEIF_BRANDS & set(brands[1])):
        return HEIF
    raise RejectedImage("not_an_image", f"content is {_what_else(head)}, not {ACCEPTED_TEXT}")


# ---------------------------------------------------------------------------
# Headers: format, width, height from the first bytes, without decoding pixels
# ---------------------------------------------------------------------------
def _need(head: bytes, end: int) -> None:
    if end > len(head):
        raise HeaderNeedsMore(end)


def _bad_header(format_name: str, detail: str) -> RejectedImage:
    return RejectedImage("bad_header", f"{format_name}: {detail}")


# JPEG start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are not frames.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(head: bytes, size: int) -> Header:
    position = 2
    while True:
        _need(head, position + 4)
        if head[position] != 0xFF:
            raise _bad_header(JPEG, f"no marker at byte {position} (found {head[position]:#04x})")
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker == 0xD9:
            raise _bad_header(JPEG, "end of image before any frame header")
        length = struct.unpack(">H", head[position + 2:position + 4])[0]
        if length < 2 or position + 2 + length > size:
            raise _bad_header(JPEG, f"segment {marker:#04x} at byte {position} claims {length} bytes; "
                                    f"the file has {size}")
        if marker in _SOF_MARKERS:
            _need(head, position + 9)
            height, width = struct.unpack(">HH", head[position + 5:position + 9])
            return Header(JPEG, width, height)
        if marker == 0xDA:
            raise _bad_header(JPEG, "scan data before any frame header")
        position += 2 + length


def _png_header(head: bytes, size: int) -> Header:
    _need(head, 33)
    length, kind = struct.unpack(">I4s", head[8:16])
    if kind != b"IHDR" or length != 13:
        raise _bad_header(PNG, f"first chunk is {kind!r} of {length} bytes, not IHDR")
    width, height = struct.unpack(">II", head[16:24])
    # The chunks before the pixels must fit in the file: a chunk that claims more (a 1 GB text
    # chunk in a small file) is a broken or hostile file, refused before any decoder meets it.
    position = 33
    while position + 8 <= min(len(head), size):
        length, kind = struct.unpack(">I4s", head[position:position + 8])
        if position + 12 + length > size:
            raise _bad_header(PNG, f"chunk {kind.decode('latin-1')!r} at byte {position} claims {length} bytes; "
                                   f"the file has {size}")
        if kind == b"IDAT":
            break
        position += 12 + length
    return Header(PNG, width, height)


def _webp_header(head: bytes, size: int) -> Header:
    _need(head, 30)
    riff_size = struct.unpack("<I", head[4:8])[0]
    if riff_size + 8 > size:
        raise _bad_header(WEBP, f"RIFF claims {riff_size + 8} bytes; the file has {size}")
    kind = head[12:16]
    if kind == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise _bad_header(WEBP, "VP8 frame without its start code")
        width, height = (value & 0x3FFF for value in struct.unpack("<HH", head[26:30]))
    elif kind == b"VP8L":
        if head[20] != 0x2F:
            raise _bad_header(WEBP, "VP8L frame without its signature")
        bits = struct.unpack("<I", head[21:25])[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
    else:
        raise _bad_header(WEBP, f"first chunk {kind!r} is none of VP8, VP8L, VP8X")
    return Header(WEBP, width, height)


def _boxes(data: bytes, start: int, end: int, limit: int):
    """(type, payload start, box end) of the ISOBMFF boxes in data[start:end]; HeaderNeedsMore
    when a box header lies past the bytes given; ``limit`` is the size of the whole file."""
    position = start
    while position < end:
        _need(data, position + 8)
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        payload = position + 8
        if size == 1:
            _need(data, position + 16)
            size = struct.unpack(">Q", data[position + 8:position + 16])[0]
            payload = position + 16
        elif size == 0:
            size = limit - position
        if size < payload - position or position + size > limit:
            raise _bad_header(HEIF, f"box {kind.decode('latin-1')!r} at byte {position} claims {size} bytes; "
                                    f"only {limit - position} follow")
        yield kind, payload, position + size
        position += size


def _heif_header(head: bytes, size: int) -> Header:
    meta = None
    # Every top-level box must fit in the file (a truncated HEIC ends inside its mdat).
    for kind, payload, end in _boxes(head, 0, size, size):
        if kind == b"meta":
            meta = (payload, end)
        if end >= len(head) and meta is not None:
            break
    if meta is None:
        raise _bad_header(HEIF, "no meta box")
    payload, end = meta
    _need(head, end)
    start = payload + 4  # meta is a full box: version and flags first
    primary, sizes = 1, {}
    for kind, box_payload, box_end in _boxes(head, start, end, end):
        if kind == b"pitm":
            id_bytes = 4 if head[box_payload] else 2  # pitm version 1: 32-bit item ids
            primary = int.from_bytes(head[box_payload + 4:box_payload + 4 + id_bytes], "big")
        elif kind == b"iprp":
            sizes = _item_sizes(head, box_payload, box_end)
    if primary not in sizes:
        raise _bad_header(HEIF, f"no image size (ispe) for the primary item {primary}")
    width, height = sizes[primary]
    return Header(HEIF, width, height)


def _item_sizes(head: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """item id -> (width, height) from iprp: the ispe properties of ipco, assigned by ipma."""
    properties, associations = [], {}
    for kind, payload, box_end in _boxes(head, start, end, end):
        if kind == b"ipco":
            for prop, prop_payload, _ in _boxes(head, payload, box_end, box_end):
                properties.append(struct.unpack(">II", head[prop_payload + 4:prop_payload + 12])
                                  if prop == b"ispe" else None)
        elif kind == b"ipma":
            version, flags = head[payload], int.from_bytes(head[payload + 1:payload + 4], "big")
            count = struct.unpack(">I", head[payload + 4:payload + 8])[0]
            position = payload + 8
            for _ in range(count):
                item_id_size = 4 if version >= 1 else 2
                item = int.from_bytes(head[position:position + item_id_size], "big")
                position += item_id_size
                n = head[position]
                position += 1
                indices = []
                for _ in range(n):
                    if flags & 1:
                        indices.append(struct.unpack(">H", head[position:position + 2])[0] & 0x7FFF)
                        position += 2
                    else:
                        indices.append(head[position] & 0x7F)
                        position += 1
                associations[item] = indices
    sizes = {}
    for item, indices in associations.items():
        for index in indices:  # 1-based; 0 means none
            if 0 < index <= len(properties) and properties[index - 1] is not None:
                sizes[item] = properties[index - 1]
    return sizes


_HEADER_PARSERS = {JPEG: _jpeg_header, PNG: _png_header, WEBP: _webp_header, HEIF: _heif_header}


def read_header(head: bytes, size: int) -> Header:
    """Format, width, height of a file of ``size`` bytes that starts with ``head``.

    Raises HeaderNeedsMore (read more and call again), or RejectedImage: "not_an_image" (none of the
    accepted formats, the detail names what it is) or "bad_header" (the container contradicts
    itself or the file's size).
    """
    if size == 0:
        raise RejectedImage("empty", "zero bytes")
    image_format = sniff(head[:64])
    try:
        return _HEADER_PARSERS[image_format](head, size)
    except (struct.error, IndexError):
        # A structure cut by the end of the bytes given: more bytes, unless the file ends here.
        if len(head) < size:
            raise HeaderNeedsMore(min(size, 2 * len(head))) from None
        raise _bad_header(image_format, "the file ends inside its header") from None


def header_of(read_range, size: int, first: int = HEADER_BYTES) -> Header:
    """read_header over a file read by ``read_range(start, end) -> bytes``: the first ``first``
    bytes, then only the bytes the header needs, up to MAX_HEADER_BYTES."""
    head = read_range(0, min(size, first))
    while True:
        try:
            return read_header(head, size)
        except HeaderNeedsMore as more:
            needed = min(size, max(more.needed, 2 * len(head)))
            if needed > MAX_HEADER_BYTES:
                raise RejectedImage("bad_header", f"header longer than {MAX_HEADER_BYTES} bytes "
                                                  f"(needs {more.needed})") from None
            if needed <= len(head):
                raise RejectedImage("bad_header", "the file ends inside its header") from None
            head += read_range(len(head), needed)
