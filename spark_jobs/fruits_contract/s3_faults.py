"""Retryable S3 errors a client met and retried (throttling, 5xx, dropped connections), counted by
operation and error: what the run report lists as faults. Both sides count them this way: the
Airflow tasks' s3fs clients (fruits_pipeline.storage) and the feature job's Python workers, which
read the photos themselves (fruits_spark.photo_reader). Standard library only."""
from __future__ import annotations

import threading


class S3FaultCounter:
    """A botocore ``needs-retry`` handler (``note``, called once per attempt) that remembers the attempts
    that failed retryably; thread-safe."""

    def __init__(self) -> None:
        self._met: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def note(self, response=None, operation=None, caught_exception=None, **_) -> None:
        if caught_exception is not None:
            error = type(caught_exception).__name__
        elif response is not None and (response[0].status_code >= 500 or response[0].status_code == 429):
            error = (response[1].get("Error") or {}).get("Code") or f"HTTP {response[0].status_code}"
        else:
            return
        name = getattr(operation, "name", str(operation))
        with self._lock:
            by_error = self._met.setdefault(name, {})
            by_error[error] = by_error.get(error, 0) + 1

    def take(self) -> dict[str, dict[str, int]]:
        """What was met since the last call, ``{operation: {error: attempts}}``, and forget it."""
        with self._lock:
            met = {operation: dict(errors) for operation, errors in self._met.items()}
            self._met.clear()
        return met


def merge_faults(into: dict[str, dict[str, int]], met: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    for operation, errors in met.items():
        by_error = into.setdefault(operation, {})
        for error, count in errors.items():
            by_error[error] = by_error.get(error, 0) + count
    return into


def report_faults(met: dict[str, dict[str, int]], where: str = "") -> list[dict]:
    """``met`` as the run report's faults: {"kind": "s3_retried", "detail"}."""
    return [{"kind": "s3_retried", "detail": f"{where}{operation}: " + ", ".join(
        f"{error} x{count}" for error, count in sorted(errors.items())) + " (retried with backoff)"}
        for operation, errors in sorted(met.items())]
