# The image every service of docker-compose.yaml runs: Airflow 3.3 plus the job runtime (LiteRT,
# no TensorFlow), so that FRUITS_COMPUTE=local runs the Spark jobs inside the containers.
# Python 3.11 because EMR 7 runs the jobs on 3.11 (same as pyproject.toml).
FROM apache/airflow:3.3.2-python3.11

USER root
# Spark needs a Java 17 runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get autoremove -yqq --purge \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/default-java
ENV JAVA_HOME=/usr/lib/jvm/default-java

USER airflow
# Pinned to the versions of pyproject.toml (tests/compose checks they agree); Airflow itself
# is re-pinned so pip never upgrades or downgrades the image's Airflow.
RUN pip install --no-cache-dir \
    "apache-airflow==${AIRFLOW_VERSION}" \
    "apache-airflow-providers-amazon[aiobotocore,s3fs]==9.39.0" \
    "s3fs==2026.9.0" \
    "pyspark==3.5.8" \
    "ai-edge-litert==2.3.0" \
    "pillow==13.0.0" \
    "pillow-heif==1.8.1" \
    "pyvips==3.2.0" \
    "pyvips-binary==8.18.7" \
    "pyarrow==26.0.1" \
    "deltalake==1.6.6" \
    "pandas==3.1.1" \
    "numpy==2.4.6" \
    "scipy==1.17.1" \
    "matplotlib==3.11.2"

# The plugin package and the jobs' shared library are mounted (docker-compose.yaml), not baked in,
# so edits on the host are picked up; Spark's Python workers find them through PYTHONPATH.
ENV PYTHONPATH=/opt/airflow/plugins:/opt/airflow/spark_jobs \
    PYSPARK_PYTHON=python \
    PYSPARK_DRIVER_PYTHON=python
