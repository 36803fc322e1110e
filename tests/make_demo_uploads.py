"""Remake the demo's app photos, plugins/fruits_pipeline/demo_uploads/ (make demo copies them into the lake's uploads/).

    FRUITS_SAMPLE_DIR=... python tests/make_demo_uploads.py

Four phone-style photos of Fruits-360 Test images that the demo's sample does not hold (so the demo's
classifier never trained on them), one per format the app sends, and one real photo of no fruit
(scikit-learn's china.jpg, a temple, CC BY 2.0), which the demo answers "unsure". Small frames and no
noise: the whole demo data stays under about 2 MB. demo_uploads/ATTRIBUTION.md says where each comes from.
"""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from PIL import Image  # noqa: E402

from phone_photos import phone_frame, upload_bytes  # noqa: E402

TARGET = Path(__file__).resolve().parents[1] / "plugins" / "fruits_pipeline" / "demo_uploads"
FRAME = (800, 600)
# (upload path, Fruits-360 Test image, kind)
FRUIT_UPLOADS = (
    ("2026-12-06/u17/IMG_0001.jpg", "lemon/200_100.jpg", "jpeg_sideways"),
    ("2026-12-06/u17/IMG_0002.heic", "raspberry/109_100.jpg", "heic"),
    ("2026-12-06/u42/IMG_0003.webp", "lemon/r_20_100.jpg", "webp"),
    ("2026-12-06/u42/IMG_0004.png", "raspberry/112_100.jpg", "png_alpha"),
)
NOT_FRUIT_UPLOAD = ("2026-12-06/u58/IMG_0005.jpg", "sklearn", "datasets/images/china.jpg")


def main() -> int:
    sample = Path(os.environ["FRUITS_SAMPLE_DIR"]) / "Test"
    for name, source, kind in FRUIT_UPLOADS:
        target = TARGET / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upload_bytes(phone_frame(sample / source, FRAME, noise=0), kind))
    name, package, path = NOT_FRUIT_UPLOAD
    (TARGET / name).parent.mkdir(parents=True, exist_ok=True)
    with Image.open(resources.files(package).joinpath(path)) as photo:
        photo.save(TARGET / name, "JPEG", quality=80)  # re-encoded only, to keep the demo small
    for file in sorted(TARGET.rglob("IMG_*")):
        print(f"{file.relative_to(TARGET)}: {file.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
