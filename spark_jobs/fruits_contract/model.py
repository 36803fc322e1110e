"""The feature model both sides name (docs/design.md, "The model")."""
from __future__ import annotations

from pathlib import Path

# MobileNetV2's pooled output: the width of every feature vector, and the most components a PCA keeps.
FEATURE_DIM = 1280
MODEL_FAMILY = "mobilenet_v2_1.0_224_avg"
# The converted model the repository ships (written by `make model`, its provenance beside it): the
# feature job's default --model and what the DAG stages into the lake's models/. Only a checkout has
# it; a cluster reads the staged copy.
SHIPPED_MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "mobilenet_v2_1.0_224_no_top.tflite"
