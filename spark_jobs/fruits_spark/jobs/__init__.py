"""The three Spark jobs, one module each, of one shape: ``parse_args(argv)``, ``run(spark, args)`` (the
job on a session; returns its job result) and ``main(argv)``, which hands both to
fruits_spark.job_runner.run_job. spark_jobs/<job>.py, the entry scripts spark-submit runs, call ``main``."""
