"""Library shared by the Fruits! Spark jobs; shipped to EMR as a zip via --py-files. Never imports Airflow."""
