"""Real photos of no fruit, licensed, from Python packages: what the "not sure" rule is measured on.

The training job reports, for every run, which share of these its classifier answers unsure
(``classifier.unsure.not_fruit_unsure``). It reads their features from NOT_FRUIT_FEATURES, shipped
inside this package (and the jobs' --py-files zip): the photos' packages (scikit-image, scikit-learn,
matplotlib) are test tools, not on the cluster.

    python -m fruits_spark.not_fruit    # remake NOT_FRUIT_FEATURES with the shipped feature model

Every photo is a photograph (none drawn by code); the licences are the packages' own statements.
"""
from __future__ import annotations

import hashlib
import io
import sys
from importlib import resources
from pathlib import Path

import numpy as np

NOT_FRUIT_FEATURES = "not_fruit_photos.npz"

# (name, package, file inside the package, what it shows, licence as the package states it)
NOT_FRUIT_PHOTOS = (
    ("astronaut", "skimage", "data/astronaut.png", "portrait of astronaut Eileen Collins", "public domain (NASA)"),
    ("brick", "skimage", "data/brick.png", "brick wall", "CC0 (CC0Textures)"),
    ("camera", "skimage", "data/camera.png", "man with a camera, grey", "CC0 (Lav Varshney)"),
    ("cell", "skimage", "data/cell.png", "cell, quantitative phase image", "CC0 (Paul Müller et al.)"),
    ("chelsea", "skimage", "data/chelsea.png", "cat", "CC0 (Stefan van der Walt)"),
    ("clock", "skimage", "data/clock_motion.png", "clock, motion-blurred", "public domain (Stefan van der Walt)"),
    ("coffee", "skimage", "data/coffee.png", "cup of coffee", "CC0 (Rachel Michetti)"),
    ("coins", "skimage", "data/coins.png", "Greek coins, grey", "no known copyright restrictions (Brooklyn Museum)"),
    ("grass", "skimage", "data/grass.png", "grass", "CC0 (CC0Textures)"),
    ("gravel", "skimage", "data/gravel.png", "gravel", "CC0 (CC0Textures)"),
    ("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "galaxies", "public domain (NASA)"),
    ("immunohistochemistry", "skimage", "data/ihc.png", "stained tissue", "no known copyright restrictions"),
    ("retina", "skimage", "data/retina.jpg", "human retina", "CC0 (Mikael Häggström)"),
    ("rocket", "skimage", "data/rocket.jpg", "rocket on its launch pad", "public domain (SpaceX)"),
    ("china", "sklearn", "datasets/images/china.jpg", "temple", "CC BY 2.0 (danielbuechele, Flickr)"),
    ("flower", "sklearn", "datasets/images/flower.jpg", "flower", "CC BY 2.0 (vultilion, Flickr)"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "portrait of Grace Hopper",
     "public domain (US Navy)"),
)


def photo_bytes(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


def photo_features(flatbuffer: bytes) -> np.ndarray:
    """NOT_FRUIT_PHOTOS through the feature job's decode and ``flatbuffer``'s model: float32 [n, dim]."""
    from fruits_spark.feature_model import LiteRTModel
    from fruits_spark.features import model_input

    model = LiteRTModel(flatbuffer)
    return np.concatenate([model.predict(model_input(photo_bytes(package, path)))
                           for _, package, path, _, _ in NOT_FRUIT_PHOTOS])


def write_features(flatbuffer: bytes, target: Path) -> Path:
    np.savez_compressed(target, features=photo_features(flatbuffer),
                        names=np.array([photo[0] for photo in NOT_FRUIT_PHOTOS]),
                        licences=np.array([photo[4] for photo in NOT_FRUIT_PHOTOS]),
                        feature_model_sha256=np.array(hashlib.sha256(flatbuffer).hexdigest()))
    return target


def shipped_features() -> tuple[np.ndarray, str]:
    """(features [n, dim] of NOT_FRUIT_PHOTOS, sha256 of the feature model that made them)."""
    with np.load(io.BytesIO(resources.files(__package__).joinpath(NOT_FRUIT_FEATURES).read_bytes()),
                 allow_pickle=False) as npz:
        return npz["features"], str(npz["feature_model_sha256"])


def main() -> int:
    from fruits_contract.model import SHIPPED_MODEL_PATH

    target = write_features(SHIPPED_MODEL_PATH.read_bytes(), Path(__file__).with_name(NOT_FRUIT_FEATURES))
    print(f"{target}: features of {len(NOT_FRUIT_PHOTOS)} photos of no fruit by {SHIPPED_MODEL_PATH.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
