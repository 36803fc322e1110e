"""Stage the job code (content-hashed ``code/<version>/``) and the model (content-hashed ``models/<name>/``) once."""
from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from fruits_pipeline import storage
from fruits_contract.lake import Lake

log = logging.getLogger(__name__)


def stage_code(lake: Lake, jobs_dir: Path, conn_id: str | None, wheelhouse: Path | None = None) -> str:
    """Upload the code package to code/<version>/ unless that version is already there; returns its URI.

    ``wheelhouse`` (Settings.wheelhouse_dir, EMR runs): the nodes' wheels, shipped in code/<version>/wheelhouse/."""
    from fruits_pipeline.job_code import build_code_package

    with tempfile.TemporaryDirectory(prefix="fruits-code-") as out_dir:
        package = build_code_package(Path(jobs_dir), Path(out_dir), wheelhouse)
        code_uri = lake.code(package.version)
        uploaded = 0
        for target, local_file in package.keys(code_uri).items():
            if not storage.exists(target, conn_id):
                storage.write_bytes(target, Path(local_file).read_bytes(), conn_id)
                uploaded += 1
        log.info("code %s: %d of %d files uploaded (the others were already staged)",
                 code_uri, uploaded, len(package.files))
    return code_uri


def staged_model_name(model_file: Path, content: bytes) -> str:
    """Where a model lives under models/: a folder named by its content, the file keeping its name,
    e.g. ``mobilenet_v2_1.0_224_no_top-<sha256[:16]>/mobilenet_v2_1.0_224_no_top.tflite``.
    Another model never overwrites one a past run used, and the same model is uploaded once."""
    return f"{model_file.stem}-{hashlib.sha256(content).hexdigest()[:16]}/{model_file.name}"


def stage_model(lake: Lake, model_file: Path, conn_id: str | None) -> str:
    """Upload the model flatbuffer (and its provenance JSON, when beside it) to models/<name>/
    unless already there; returns the name for ``Lake.model``."""
    source = Path(model_file)
    if not source.is_file():
        raise FileNotFoundError(f"model {source} is not a file: set FRUITS_MODEL to a .tflite, or run `make model`")
    content = source.read_bytes()
    name = staged_model_name(source, content)
    target = lake.model(name)
    if storage.exists(target, conn_id):
        log.info("model already staged at %s", target)
        return name
    provenance = source.with_suffix(".provenance.json")
    if provenance.is_file():  # first, so that a staged model always has its provenance beside it
        storage.write_bytes(lake.model(str(Path(name).with_name(provenance.name))), provenance.read_bytes(), conn_id)
    storage.write_bytes(target, content, conn_id)
    log.info("model staged at %s (%d bytes)", target, len(content))
    return name
