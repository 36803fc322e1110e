"""Driver script for tests/cluster: fit the PCA job's model ten times in one application.

    spark-submit --py-files fruits_spark.zip fit_pca_ten_times.py FEATURES_URI OUT_DIR

Writes OUT_DIR/fit-<n>.npz (k, ratios, components) for the test to compare; fits only, no output
Parquet, so ten fits cost ten passes over the features and nothing else.
"""
import sys

import numpy as np

from fruits_spark.session import build_session
from fruits_spark.pca import fit_pca, read_features

features, out_dir = sys.argv[1], sys.argv[2]
spark = build_session("fit_pca_ten_times")
try:
    frame = read_features(spark, features)
    for number in range(10):
        result = fit_pca(frame, features, variance=0.9)
        np.savez(f"{out_dir}/fit-{number}.npz", k=result.report["k"],
                 ratios=np.array(result.report["explained_variance_ratio"]),
                 components=result.model.stages[-1].pc.toArray())
finally:
    spark.stop()
