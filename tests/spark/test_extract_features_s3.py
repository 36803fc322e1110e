"""The feature job reading the photos from S3 as on EMR: its Python workers GET each photo themselves
(fruits_spark.photo_reader), against a moto server that throttles and drops connections when told
(tests/moto_faults.py). Local Spark has no S3 filesystem at all: the job passing here shows that no
byte of a photo went through the JVM. The output stays on file:// (Hadoop's S3 connectors are jars
this machine cannot install)."""
from __future__ import annotations

import pandas as pd
import pytest

from fruits_contract.model import SHIPPED_MODEL_PATH
from fruits_spark import feature_model, photo_reader
from fruits_spark.jobs import extract_features
from generated_images import write_generated_images
from moto_emr import REGION
from moto_faults import faulty_moto_server

BUCKET = "fruits-photos"
# What the workers need to reach moto: the endpoint and (any) credentials. Never a secret of a real
# deployment: on EMR the instance profile gives the credentials and spark-defaults the region.
MOTO_ENV = {"AWS_ENDPOINT_URL_S3": None, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION}


@pytest.fixture(scope="module")
def driver_model(spark):
    return feature_model.load_model_on_driver(spark, str(SHIPPED_MODEL_PATH))


@pytest.fixture(scope="module")
def photos_on_s3(tmp_path_factory):
    """(endpoint, injector, {s3 uri: local copy}) of six JPEGs under s3://fruits-photos/raw/<label>/."""
    import boto3

    with faulty_moto_server() as (endpoint, injector):
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        root = tmp_path_factory.mktemp("photos")
        uploaded = {}
        for path in write_generated_images(root, per_label=3, labels=("apple red", "kiwi")):
            key = f"raw/{path.relative_to(root).as_posix()}"
            s3.upload_file(str(path), BUCKET, key)
            uploaded[f"s3://{BUCKET}/{key}"] = path
        yield endpoint, injector, uploaded


@pytest.fixture
def moto_env(spark, monkeypatch, photos_on_s3):
    """The moto endpoint in the driver's environment and in the Python workers' (sc.environment: what
    Spark starts its Python workers with), removed afterwards."""
    env = {**MOTO_ENV, "AWS_ENDPOINT_URL_S3": photos_on_s3[0]}
    workers = spark.sparkContext.environment
    before = {name: workers.get(name) for name in env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
        workers[name] = value
    yield
    for name, value in before.items():
        if value is None:
            workers.pop(name, None)
        else:
            workers[name] = value


def _manifest(tmp_path, uris: dict) -> str:
    """A manifest with the columns of validation's the job reads: path and size (of the local copies)."""
    folder = tmp_path / "manifest"
    folder.mkdir()
    pd.DataFrame({"path": list(uris), "size": [local.stat().st_size if local else 1234 for local in uris.values()]}
                 ).astype({"size": "int64"}).to_parquet(folder / "part-00000.parquet")
    return str(folder)


def _run(spark, driver_model, images: str, output, manifest: str | None = None) -> dict:
    flags = ["--manifest", manifest] if manifest else []
    return extract_features.run(spark, extract_features.parse_args(["--images", images, "--output", str(output), *flags]),
                                model=driver_model)


def test_the_workers_read_each_photo_from_s3_retry_throttling_and_drops_and_count_them(
        spark, driver_model, photos_on_s3, moto_env, tmp_path):
    endpoint, injector, uploaded = photos_on_s3
    injector.clear()
    first, second = sorted(uploaded)[:2]
    injector.inject("slowdown", "GET", first.split(f"{BUCKET}/", 1)[1], times=2)
    injector.inject("drop", "GET", second.split(f"{BUCKET}/", 1)[1], times=1)

    result = _run(spark, driver_model, f"s3://{BUCKET}/raw", tmp_path / "out", _manifest(tmp_path, uploaded))

    assert (result["featurized"], result["rejected"], result["duplicates"]) == (6, 0, 0)
    got = pd.read_parquet(tmp_path / "out").set_index("path")
    assert sorted(got.index) == sorted(uploaded)
    gets = [target for method, target in injector.requests if method == "GET" and "/raw/" in target]
    assert len(gets) == 6 + 2 + 1  # each photo once, the faulty ones again; no listing, no HEAD (sizes: the manifest)
    retried = result["s3_retried"]["GetObject"]
    assert retried["SlowDown"] == 2 and sum(retried.values()) == 3, retried

    # The same photos from disk: the same features, bit for bit.
    local_root = tmp_path / "local" / "raw"
    for uri, path in uploaded.items():
        target = local_root / uri.split("/raw/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    _run(spark, driver_model, str(local_root), tmp_path / "local-out")
    local = pd.read_parquet(tmp_path / "local-out")
    local.index = [f"s3://{BUCKET}/raw/" + p.split("/raw/", 1)[1] for p in local.path]
    for uri in uploaded:
        assert list(got.loc[uri, "features"]) == list(local.loc[uri, "features"]), uri
        assert got.loc[uri, "label"] == local.loc[uri, "label"]


def test_a_photo_gone_from_s3_is_rejected_as_missing_and_the_others_are_featurized(
        spark, driver_model, photos_on_s3, moto_env, tmp_path):
    _, injector, uploaded = photos_on_s3
    injector.clear()
    gone = f"s3://{BUCKET}/raw/kiwi/deleted-after-validation.jpg"
    result = _run(spark, driver_model, f"s3://{BUCKET}/raw", tmp_path / "out",
                  _manifest(tmp_path, {**uploaded, gone: None}))
    assert (result["featurized"], result["rejected"]) == (6, 1)
    (reject,) = pd.read_parquet(tmp_path / "out" / "_rejects").itertuples()
    assert (reject.path, reject.reason) == (gone, "missing") and "no such object" in reject.detail


def test_without_a_manifest_the_job_lists_s3_itself_and_hashes_only_same_size_photos(
        spark, driver_model, photos_on_s3, moto_env, tmp_path):
    _, injector, uploaded = photos_on_s3
    injector.clear()
    assert sorted(uri for uri, _ in photo_reader.list_photos(f"s3://{BUCKET}/raw")) == sorted(uploaded)
    result = _run(spark, driver_model, f"s3://{BUCKET}/raw", tmp_path / "out")
    assert (result["featurized"], result["rejected"]) == (6, 0)
    sizes = [path.stat().st_size for path in uploaded.values()]
    shared = sum(sizes.count(size) > 1 for size in sizes)
    gets = [target for method, target in injector.requests if method == "GET" and "/raw/" in target]
    assert len(gets) == 6 + shared  # the photos sharing a size are read once more, to be hashed
