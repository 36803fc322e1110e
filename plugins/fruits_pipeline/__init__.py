"""Airflow-side package of the Fruits! image pipeline: settings, lake layout,
validation, EMR job flow and steps, local runner, reports and costs.

Importing it never pulls in TensorFlow or pyspark: the DAG file imports it at parse time.
"""
