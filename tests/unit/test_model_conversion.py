"""`make model`: the shipped flatbuffer, its provenance, and a conversion that refuses a model unequal
to Keras. Development only (TensorFlow converts and runs Keras here; the cluster never has it)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fruits_contract.model import FEATURE_DIM, SHIPPED_MODEL_PATH
from fruits_spark import model_conversion
from fruits_spark.feature_model import check_model, provenance_path


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_model_is_what_its_provenance_describes():
    provenance = json.loads(provenance_path(SHIPPED_MODEL_PATH).read_text())
    assert provenance["file"] == SHIPPED_MODEL_PATH.name
    assert provenance["sha256"] == _sha256(SHIPPED_MODEL_PATH)
    assert provenance["bytes"] == SHIPPED_MODEL_PATH.stat().st_size
    check = provenance["equality_check"]
    assert check["passed"] and check["min_cosine"] >= model_conversion.EQUALITY_MIN_COSINE
    assert {"tensorflow", "keras", "ai_edge_litert"} <= set(provenance["converter"])
    assert check_model(SHIPPED_MODEL_PATH.read_bytes()).output_width == FEATURE_DIM


def test_shipped_model_comes_from_the_weights_on_hand(real_weights):
    if real_weights is None:
        pytest.skip("FRUITS_WEIGHTS is not set: the source weights are needed to compare their sha256")
    provenance = json.loads(provenance_path(SHIPPED_MODEL_PATH).read_text())
    assert provenance["source_weights"]["sha256"] == _sha256(real_weights), (
        "the shipped model was converted from other weights than FRUITS_WEIGHTS: run `make model`")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """MobileNetV2 weights that are not the shipped model's (random init, fixed seed)."""
    import keras

    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("weights") / "random.weights.h5"
    keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg",
                                   weights=None).save_weights(path)
    return path


def test_conversion_writes_a_model_equal_to_keras_and_its_provenance(random_weights, images_dir, tmp_path):
    output = tmp_path / "models" / "m.tflite"
    provenance = model_conversion.build(str(random_weights), images_dir, output)
    assert provenance == json.loads(provenance_path(output).read_text())
    assert provenance["sha256"] == _sha256(output)
    assert provenance["source_weights"]["sha256"] == _sha256(random_weights)
    assert provenance["equality_check"]["passed"] and provenance["equality_check"]["images"] >= 8
    assert output.read_bytes() != SHIPPED_MODEL_PATH.read_bytes()  # other weights, another model


def test_conversion_refuses_a_model_unequal_to_keras_and_leaves_the_old_one(random_weights, images_dir, tmp_path,
                                                                             monkeypatch, capsys):
    output = tmp_path / "m.tflite"
    output.write_bytes(b"the previous model")
    # A converter that returns a valid flatbuffer of the wrong weights (the shipped ImageNet model).
    monkeypatch.setattr(model_conversion, "convert", lambda model: SHIPPED_MODEL_PATH.read_bytes())
    code = model_conversion.main(["--weights", str(random_weights), "--images", str(images_dir),
                                  "--output", str(output)])
    assert code == 1
    assert "converted model refused: min cosine" in capsys.readouterr().err
    assert output.read_bytes() == b"the previous model"
    assert not provenance_path(output).exists()


def test_check_images_are_decoded_and_scaled_as_the_job_does(images_dir):
    pixels, described = model_conversion.check_images(images_dir, count=4)
    assert pixels.shape == (4, 224, 224, 3) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() < 0 < pixels.max() <= 1.0
    assert described.startswith("4 images from")


def test_weights_that_are_not_mobilenet_v2_are_named_in_the_refusal(tmp_path, capsys):
    bad = tmp_path / "notes.weights.h5"
    bad.write_text("not weights")
    output = tmp_path / "m.tflite"
    assert model_conversion.main(["--weights", str(bad), "--output", str(output)]) == 1
    assert f"--weights {bad} could not be loaded into MobileNetV2" in capsys.readouterr().err
    assert not output.exists()
