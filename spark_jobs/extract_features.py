"""Feature job: images -> MobileNetV2 features (Parquet). See DESIGN.md, "Feature job".

    spark-submit spark_jobs/extract_features.py --images URI --output URI
        [--manifest URI] [--model URI] [--batch-size N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

try:
    import fruits_spark  # noqa: F401  (shipped with --py-files fruits_spark.zip on a cluster)
except ImportError:  # run from the checkout: the package sits beside this script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fruits_spark.common import FAULT_TOLERANCE_CONFIG, build_session  # noqa: E402
from fruits_spark.features import DEFAULT_BATCH_SIZE, run  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MobileNetV2 features of images, written as Parquet.")
    parser.add_argument("--images", required=True, help="folder or prefix read recursively; label = parent folder")
    parser.add_argument("--output", required=True, help="Parquet output (overwritten); rejects under _rejects/")
    parser.add_argument("--manifest", help="Parquet with a 'path' column: only these images are read")
    parser.add_argument("--model", help="TFLite flatbuffer of MobileNetV2 1.0 224 no top, any URI Spark reads "
                                        "(default: the one the repository ships, spark_jobs/models/)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per Arrow batch: decoded together, held in memory at once")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    spark = build_session("fruits-extract-features", FAULT_TOLERANCE_CONFIG)
    try:
        result = run(spark, args.images, args.output, args.manifest, args.model, args.batch_size)
    finally:
        spark.stop()
    print("FRUITS_RESULT " + json.dumps(result), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
