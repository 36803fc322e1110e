"""Spark's Python daemon with TensorFlow imported once, before it forks the Python workers.

The feature job's session sets ``spark.python.daemon.module`` to this module (features.SESSION_CONFIG).
Spark forks every Python worker of an executor from one daemon process; importing TensorFlow
there means the import (7 s of one core here with compiled bytecode, 14-18 s without) is paid
once per executor instead of once per worker, and the copies share its memory pages. Only the
import happens here: TensorFlow starts no thread pool and no eager context when imported, so
each worker still sizes its own pools to its task slot after the fork (features._worker_model).
"""
from __future__ import annotations

import os
import sys


def preload_tensorflow() -> None:
    """Import TensorFlow and the Keras model code; on failure say so and let the workers try."""
    # The JVM reads the daemon's port from its stdout: no import may print there.
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow  # noqa: F401
        import keras.applications.mobilenet_v2  # noqa: F401
    except Exception as exc:  # the workers' own import will then fail with the full story
        print(f"fruits_spark.tf_daemon: TensorFlow not preloaded ({type(exc).__name__}: {exc})", file=sys.stderr)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)


if __name__ == "__main__":
    preload_tensorflow()
    from pyspark.daemon import manager

    manager()
