"""Stage the job code (content-hashed ``code/<version>/``) and the model weights (``models/``) once."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from fruits_pipeline import storage
from fruits_pipeline.lake import Lake

log = logging.getLogger(__name__)


def stage_code(lake: Lake, jobs_dir: Path, conn_id: str | None) -> str:
    """Upload the code package to code/<version>/ unless that version is already there; returns its URI."""
    from fruits_pipeline.code_package import build_code_package  # written by the Spark-jobs side

    with tempfile.TemporaryDirectory(prefix="fruits-code-") as out_dir:
        package = build_code_package(Path(jobs_dir), Path(out_dir))
        code_uri = lake.code(package.version)
        uploaded = 0
        for target, local_file in package.keys(code_uri).items():
            if not storage.exists(target, conn_id):
                storage.write_bytes(target, Path(local_file).read_bytes(), conn_id)
                uploaded += 1
        log.info("code %s: %d of %d files uploaded (the others were already staged)",
                 code_uri, uploaded, len(package.files))
    return code_uri


def stage_weights(lake: Lake, weights_path: str | None, conn_id: str | None) -> str | None:
    """Upload the weights file to models/<filename> when missing; returns the file name, or None."""
    if not weights_path:
        log.info("FRUITS_WEIGHTS not set: the feature job loads Keras' ImageNet weights itself")
        return None
    source = Path(weights_path)
    if not source.is_file():
        raise FileNotFoundError(f"FRUITS_WEIGHTS={weights_path!r} is not a file")
    target = lake.model(source.name)
    if storage.exists(target, conn_id):
        log.info("weights already staged at %s", target)
    else:
        storage.write_bytes(target, source.read_bytes(), conn_id)
        log.info("weights staged at %s (%d bytes)", target, source.stat().st_size)
    return source.name
