# Everything runs from the checkout's own .venv; `make install` is idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: install test bench model package demo classify cost migrate infra check-java clean screenshots

install: $(STAMP) check-java

# --compile-bytecode, as pip does by default: without .pyc files (and where PYTHONDONTWRITEBYTECODE
# is set) every process that imports TensorFlow compiles it again, ~10 s of CPU each time.
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "make install: $(PYTHON) not found; install Python 3.11 (EMR 7 runs 3.11) or run 'make PYTHON=/path/to/python3.11 install'" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.lock
	# --no-cache: uv's cache may hand this venv an editable wheel built for another checkout of the
	# same project (seen: a venv whose packages pointed at a deleted clone, so nothing imported).
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps --no-cache -e .
	touch $(STAMP)

# Spark needs a Java 17 runtime; say how to get one instead of failing inside spark-submit.
check-java:
	@command -v java >/dev/null || { echo "make: Java 17 is needed by Spark and 'java' is not on PATH." >&2; \
	  echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless    macOS: brew install openjdk@17" >&2; exit 1; }

# --durations: CI keeps the slowest tests in its log, which is how the suite is held under its 30 minutes.
test: install
	$(BIN)/python -m pytest --durations=25

# The UI screenshots README.md and docs/testing.md show (tests/ui/screenshots/: the trigger form, the run grids,
# the Run report tab), taken by the UI suite against a real Airflow.
# Needs chromium and chromium-driver (Debian: apt-get install chromium chromium-driver).
screenshots: install
	FRUITS_UI_SCREENSHOTS=$(abspath tests/ui/screenshots) FRUITS_UI_REQUIRED=1 $(BIN)/python -m pytest -m ui tests/ui

# The feature job against the naive TensorFlow loop and one LiteRT process, in one run (docs/performance.md);
# then the mixed phone set: 400 12-MP uploads (JPEG, sideways JPEG, HEIC, WebP, PNG), job and validation;
# then the JPEG set, 3,000 uploads: the job's fixed ~8 s of Spark is spread over what a day brings
# (docs/phone-photos.md). Making the sets takes a while once; they are kept in bench/.phone-set/.
# Last, the scale set: the PCA and classifier steps on 50,000 and 200,000 synthetic feature rows, and the
# 200,000 on local[1], local[2] and a standalone cluster (docs/costs.md); kept in bench/.scale-set/.
PHONE_JPEG_COUNT ?= 3000
bench: install
	$(BIN)/python bench/bench_features.py $(BENCH_ARGS)
	$(BIN)/python bench/bench_phone.py $(PHONE_BENCH_ARGS)
	$(BIN)/python bench/bench_phone.py --kinds jpeg,jpeg_sideways --count $(PHONE_JPEG_COUNT) \
		--output bench/results/phone-jpeg.json
	$(BIN)/python bench/bench_scale.py $(SCALE_BENCH_ARGS)

# Regenerate the shipped model (spark_jobs/models/*.tflite + .provenance.json) from Keras' MobileNetV2:
# FRUITS_WEIGHTS=/path/to/x.weights.h5, else Keras' ImageNet weights; refused unless equal to Keras.
model: install
	$(BIN)/python -m fruits_spark.model_conversion $(MODEL_ARGS)

# dist/code: what the DAG stages to code/<version>/, with dist/wheelhouse (the nodes' wheels for x86_64
# and aarch64, downloaded once; EMR nodes install from it with --no-index). FRUITS_WHEELHOUSE defaults to it.
package: install
	$(BIN)/python -m fruits_pipeline.code_package dist/code --wheelhouse dist/wheelhouse

# The whole DAG once on local Spark, offline, on the Fruits-360 sample in plugins/fruits_pipeline/demo_data/
# (or `IMAGES=/path/to/<label>/<image>.jpg-folders`); `PCA_K=8` or `PCA_VARIANCE=0.9` asks for another PCA.
LAKE ?= .lake
IMAGES ?= $(FRUITS_SAMPLE_DIR)
demo: install
	@$(BIN)/python -m fruits_pipeline.demo --lake "$(LAKE)" $(if $(IMAGES),--images "$(IMAGES)") \
	  $(if $(PCA_K),--pca-k "$(PCA_K)") $(if $(PCA_VARIANCE),--pca-variance "$(PCA_VARIANCE)")

# Classify photos with a run's classifier (no Spark, Airflow or TensorFlow; docs/classifier.md): IMAGES= image
# files, MODEL= a classifier/<run_key>/ (s3://, file:// or a folder), by default the lake $(LAKE)'s current one
# (classifier/current.json).
classify: install
	@test "$(origin IMAGES)" = "command line" || { echo "make classify: give IMAGES=, one or more image files: make classify IMAGES=photo.jpg [MODEL=...]" >&2; exit 2; }
	@model="$(MODEL)"; \
	if [ -z "$$model" ]; then \
	  model=$$($(BIN)/python -c 'import sys; from fruits_contract.lake import Lake; from fruits_pipeline.report import current_classifier; found = current_classifier(Lake(sys.argv[1]), None); print(found["classifier_uri"] if found else "")' "file://$(abspath $(LAKE))"); \
	  test -n "$$model" || { echo "make classify: no MODEL= and no run of the lake $(LAKE) trained a classifier: run make demo first" >&2; exit 2; }; \
	fi; \
	$(BIN)/python -m fruits_spark.classify --model "$$model" $(IMAGES)

# Projected EMR time and cost from `make bench`'s throughput and the eu-west-3 price table.
# A lake written before the ledger (docs/design.md, "The ledger"): dry run by default, YES=1 records.
migrate: install
	@test "$(origin LAKE)" = "command line" || { echo "make migrate: give LAKE=, the lake's URI: make migrate LAKE=s3://bucket [YES=1]" >&2; exit 2; }
	@$(BIN)/python -m fruits_pipeline.migrate --lake "$(LAKE)" $(if $(YES),--yes)

cost: install
	@test -f bench/results/latest.json || { echo "make cost: bench/results/latest.json not found: run 'make bench' first (it measures the feature job's throughput)" >&2; exit 1; }
	@$(BIN)/python -m fruits_pipeline.cost_projection $(COST_ARGS)

# Bucket, KMS key, EMR security configuration and IAM roles for FRUITS_LAKE_URI in FRUITS_REGION (idempotent).
# `make infra INFRA_ARGS=check` audits without changing anything; see docs/data-protection.md.
INFRA_ARGS ?= provision
infra: install
	$(BIN)/python -m fruits_infra $(INFRA_ARGS)

clean:
	rm -rf dist build .pytest_cache spark-warehouse
