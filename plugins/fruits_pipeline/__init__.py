"""Airflow-side package of the Fruits! image pipeline: settings, the run plan, validation, EMR job flow
and steps, local runner, reports and costs (the lake layout is fruits_contract's).

It never imports fruits_spark, and the DAG file's imports pull in no Spark, pandas, pyarrow or
TensorFlow (docs/design.md, "Packages and their boundaries"; tests/unit/test_import_boundaries.py).
"""
