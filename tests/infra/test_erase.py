"""Right to erasure on a file:// lake and on a versioned moto S3 lake with manifests, features and PCA Parquet."""
from __future__ import annotations

import io
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra_testing import REGION
from fruits_infra.cli import main
from fruits_infra.erase import ErasureError, erase, select, store_for
from fruits_contract.lake import Lake

IMAGES = {  # label -> file names; labels with spaces as in Fruits-360
    "Apple Red 1": ["a1.jpg", "a2.jpg"],
    "Banana": ["b1.jpg", "b2.jpg", "b3.jpg"],
    "Kiwi": ["k1.jpg"],
}
RUNS = ("2026-11-20T000000Z", "2026-11-21T000000Z")
FEATURES = pa.list_(pa.float32())


def _table(rows: list[tuple[str, str]], **columns) -> pa.Table:
    return pa.table({"path": [p for p, _ in rows], "label": [l for _, l in rows], **columns})


def build_lake(put, lake: Lake) -> dict[str, list[str]]:
    """raw/ images and, for two runs, manifests, features (+ _rejects) and PCA outputs; returns paths by label."""
    paths = {label: [lake.uri("raw", label, name) for name in names] for label, names in IMAGES.items()}
    put("raw/Banana/corrupt.jpg", b"not a jpeg")
    for label, names in IMAGES.items():
        for name in names:
            put(f"raw/{label}/{name}", f"jpeg bytes of {label}/{name}".encode())
    rows = [(p, label) for label, ps in paths.items() for p in ps]
    first, second = rows[:3], rows[3:]
    for run, batch in zip(RUNS, (first, second)):
        n = len(batch)
        _parquet(put, f"manifests/{run}/valid/part-00000.parquet", _table(
            batch, size=pa.array([100] * n, pa.int64()), sha256=["0" * 64] * n,
            width=pa.array([100] * n, pa.int32()), height=pa.array([100] * n, pa.int32())))
        _parquet(put, f"manifests/{run}/rejected/part-00000.parquet", pa.table({
            "path": [lake.uri("raw/Banana/corrupt.jpg")], "reason": ["undecodable"], "detail": ["bad header"]}))
        _parquet(put, f"features/batch={run}/part-00000.parquet", _table(
            batch, features=pa.array([[0.5] * 4] * n, FEATURES), model=["mobilenet_v2"] * n))
        _parquet(put, f"features/batch={run}/_rejects/part-00000.parquet", pa.table({
            "path": [lake.uri("raw/Banana/corrupt.jpg")], "reason": ["decode"], "detail": ["x"]}))
    # PCA of the latest run is fitted on every batch; rows split over two part files as Spark writes them.
    _parquet(put, f"pca/{RUNS[1]}/part-00000.parquet", _table(rows[:4], pca_features=pa.array([[1.0, 2.0]] * 4, FEATURES)))
    _parquet(put, f"pca/{RUNS[1]}/part-00001.parquet", _table(rows[4:], pca_features=pa.array([[1.0, 2.0]] * 2, FEATURES)))
    _parquet(put, f"pca/{RUNS[1]}/_model/stages/1_PCA/data/part-00000.parquet", pa.table({"k": [2]}))
    put(f"pca/{RUNS[1]}/_pca_report.json", b'{"k": 2}')
    put(f"reports/{RUNS[1]}.json", ('{"rejected": {"undecodable": 1}, "examples": ["%s"]}' % paths["Kiwi"][0]).encode())
    return paths


def _parquet(put, key: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    put(key, buffer.getvalue())


class LocalLake:
    def __init__(self, root: Path):
        self.lake = Lake(f"file://{root}")
        self.root = root
        self.store = store_for(self.lake)

    def put(self, key: str, data: bytes) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}

    def all_versions(self, key: str) -> int:
        return int((self.root / key).exists())


class S3Lake:
    def __init__(self, bucket: str, prefix: str = "lake"):
        self.client = boto3.client("s3", region_name=REGION)
        self.client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        self.bucket, self.prefix = bucket, prefix
        self.lake = Lake(f"s3://{bucket}/{prefix}")
        self.store = store_for(self.lake, self.client)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def snapshot(self) -> dict[str, tuple]:
        listed = self.client.list_object_versions(Bucket=self.bucket)
        return {(v["Key"], v["VersionId"]): v.get("ETag") for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])}

    def all_versions(self, key: str) -> int:
        listed = self.client.list_object_versions(Bucket=self.bucket, Prefix=f"{self.prefix}/{key}")
        return sum(1 for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []) if v["Key"] == f"{self.prefix}/{key}")


@pytest.fixture(params=["file", "s3"])
def lake_env(request, tmp_path):
    if request.param == "file":
        env = LocalLake(tmp_path / "lake with space")
    else:
        request.getfixturevalue("aws")
        env = S3Lake("fruits-erase-test")
    env.paths = build_lake(env.put, env.lake)
    return env


def _paths_in(store, prefix: str) -> list[str]:
    found = []
    for key in store.list(prefix):
        if key.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(store.read(key)))
            if "path" in table.column_names:
                found += table.column("path").to_pylist()
    return found


def test_dry_run_lists_everything_and_changes_nothing(lake_env):
    before = lake_env.snapshot()
    lines = []
    selection = select(lake_env.lake, paths=[lake_env.paths["Banana"][0]], labels=["Apple Red 1"])
    found = erase(lake_env.store, selection, confirm=False, out=lines.append)
    assert sorted(found.raw) == ["raw/Apple Red 1/a1.jpg", "raw/Apple Red 1/a2.jpg", "raw/Banana/b1.jpg"]
    # each image appears once in a manifest, once in features and once in the PCA output
    assert sum(e.removed for e in found.parquet) == 9
    assert lake_env.snapshot() == before
    assert lines[-1].startswith("Dry run: would erase 3 raw objects, 9 derived rows")
    assert any(line.startswith("model ") and "next run" in line for line in lines)


def test_erasure_removes_raw_objects_and_every_derived_row_and_is_safe_to_rerun(lake_env):
    if isinstance(lake_env, LocalLake):  # Spark's checksum file beside a part file must not survive a rewrite
        part = lake_env.root / f"features/batch={RUNS[0]}/part-00000.parquet"
        (part.parent / f".{part.name}.crc").write_bytes(b"stale")
    store, lake = lake_env.store, lake_env.lake
    erased = [*lake_env.paths["Apple Red 1"], lake_env.paths["Banana"][0]]
    kept = [p for ps in lake_env.paths.values() for p in ps if p not in erased]
    selection = select(lake, paths=[erased[2]], labels=["Apple Red 1"])
    lines = []
    erase(store, selection, confirm=True, out=lines.append)

    assert lines[-1] == "Erased 3 raw objects, 9 derived rows in 3 Parquet files."
    for uri in erased:
        key = uri[len(lake.base_uri) + 1:]
        assert lake_env.all_versions(key) == 0, f"{key} still has versions"
    assert sorted(store.list("raw/")) == sorted(
        ["raw/Banana/corrupt.jpg", "raw/Banana/b2.jpg", "raw/Banana/b3.jpg", "raw/Kiwi/k1.jpg"])
    for root in ("manifests/", "features/", "pca/"):
        remaining = _paths_in(store, root)
        assert not set(remaining) & set(erased), root
    assert sorted(set(_paths_in(store, "pca/"))) == sorted(kept)
    assert sorted(_paths_in(store, "features/")) == sorted(kept + [lake.uri("raw/Banana/corrupt.jpg")] * 2)
    # rewritten files keep their schema (Spark reads them as the same table)
    features = pq.read_table(io.BytesIO(store.read(f"features/batch={RUNS[1]}/part-00000.parquet")))
    assert features.schema.field("features").type == FEATURES and features.num_rows == 3
    emptied = pq.read_table(io.BytesIO(store.read(f"manifests/{RUNS[0]}/valid/part-00000.parquet")))
    assert emptied.num_rows == 0 and "sha256" in emptied.column_names
    assert store.list(f"pca/{RUNS[1]}/_model/"), "the model stays unless --drop-pca-models"
    if isinstance(lake_env, LocalLake):
        assert not (part.parent / f".{part.name}.crc").exists()
    else:  # the old versions of rewritten Parquet files still held the erased rows
        assert lake_env.all_versions(f"pca/{RUNS[1]}/part-00000.parquet") == 1

    before = lake_env.snapshot()
    rerun = []
    found = erase(store, selection, confirm=True, out=rerun.append)
    assert found.empty and rerun == [
        "Nothing to erase: no raw object and no derived row matches (already erased, or never uploaded)."]
    assert lake_env.snapshot() == before


def test_a_duplicate_row_naming_an_erased_upload_as_its_original_goes_with_it(lake_env):
    """raw/Kiwi/k1.jpg was featurized; raw/Kiwi/k1-again.jpg, the same bytes, is in _duplicates with
    duplicate_of = k1. Erasing k1 removes that row too: no derived row names it any more, and the
    copy, still in raw/, is no longer marked done (the next run featurizes it)."""
    store, lake = lake_env.store, lake_env.lake
    original, copy = lake_env.paths["Kiwi"][0], lake.uri("raw", "Kiwi", "k1-again.jpg")
    other_original, other_copy = lake_env.paths["Banana"][1], lake.uri("raw", "Banana", "b2-again.jpg")
    lake_env.put("raw/Kiwi/k1-again.jpg", b"jpeg bytes of Kiwi/k1.jpg")
    key = f"features/batch={RUNS[1]}/_duplicates/part-00000.parquet"
    _parquet(lake_env.put, key, pa.table({"path": [copy, other_copy], "duplicate_of": [original, other_original],
                                          "sha256": ["1" * 64, "2" * 64]}))
    lines = []
    erase(store, select(lake, paths=["Kiwi/k1.jpg"]), confirm=True, out=lines.append)

    left = pq.read_table(io.BytesIO(store.read(key)))
    assert left.column("path").to_pylist() == [other_copy]
    assert left.column("duplicate_of").to_pylist() == [other_original]
    assert any(line.startswith(f"rows {lake.uri(key)}: removed 1, kept 1") for line in lines), lines
    assert "raw/Kiwi/k1-again.jpg" in store.list("raw/"), "only the selected upload's raw object goes"


def test_drop_pca_models_deletes_models_fitted_on_erased_images(lake_env):
    erase(lake_env.store, select(lake_env.lake, paths=["Kiwi/k1.jpg"]), confirm=True, drop_pca_models=True, out=lambda _: None)
    assert lake_env.store.list(f"pca/{RUNS[1]}/_model/") == []
    assert lake_env.store.list(f"pca/{RUNS[1]}/_pca_report.json")


def test_a_report_naming_an_erased_image_is_pointed_out_not_edited(lake_env):
    lines = []
    erase(lake_env.store, select(lake_env.lake, labels=["Kiwi"]), confirm=True, out=lines.append)
    assert f"note {lake_env.lake.uri('reports', RUNS[1] + '.json')}: names an erased image" in "\n".join(lines)
    assert b"k1.jpg" in lake_env.store.read(f"reports/{RUNS[1]}.json")


@pytest.mark.parametrize("bad, message", [
    (dict(paths=["s3://elsewhere/raw/x.jpg"]), "not under the lake's raw/"),
    (dict(prefixes=["../features"]), "not under the lake's raw/") ,
    (dict(prefixes=[""]), "selects all of raw/"),
    (dict(labels=["a/b"]), "not a label folder name"),
    (dict(), "nothing selected"),
])
def test_bad_selections_are_refused_with_a_clear_message(tmp_path, bad, message):
    with pytest.raises(ErasureError, match=message):
        select(Lake(f"file://{tmp_path}"), **bad)


def test_cli_on_a_file_lake_dry_run_then_yes(tmp_path, capsys):
    env = LocalLake(tmp_path / "lake")
    build_lake(env.put, env.lake)
    args = ["erase", "--lake", env.lake.base_uri, "--prefix", "Banana/b"]
    assert main(args) == 0
    assert "would delete" in capsys.readouterr().out
    assert (tmp_path / "lake/raw/Banana/b1.jpg").exists()
    assert main([*args, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"raw  {env.lake.uri('raw/Banana/b1.jpg')}: deleted (1 version)" in out
    assert not (tmp_path / "lake/raw/Banana/b2.jpg").exists()
    assert (tmp_path / "lake/raw/Kiwi/k1.jpg").exists()


def test_cli_on_an_s3_lake_erases_every_version(aws, capsys):
    env = S3Lake("fruits-cli-erase")
    build_lake(env.put, env.lake)
    env.put("raw/Kiwi/k1.jpg", b"a second upload of the same name")  # two versions now
    assert env.all_versions("raw/Kiwi/k1.jpg") == 2
    args = ["erase", "--lake", env.lake.base_uri, "--region", REGION, "--label", "Kiwi"]
    assert main(args) == 0
    assert env.all_versions("raw/Kiwi/k1.jpg") == 2
    assert main([*args, "--yes"]) == 0
    assert f"raw  {env.lake.uri('raw/Kiwi/k1.jpg')}: deleted (2 versions)" in capsys.readouterr().out
    assert env.all_versions("raw/Kiwi/k1.jpg") == 0
    assert main([*args, "--yes"]) == 0
    assert "Nothing to erase" in capsys.readouterr().out


def _add_classifier(lake_env) -> str:
    """The classifier the latest run trained on its PCA: model files and held-out predictions naming k1."""
    k1 = lake_env.paths["Kiwi"][0]
    run = f"classifier/{RUNS[1]}"
    _parquet(lake_env.put, f"{run}/held_out/part-00000.parquet",
             _table([(k1, "Kiwi"), (lake_env.paths["Banana"][1], "Banana")], prediction=pa.array([1, 0], pa.int32())))
    _parquet(lake_env.put, f"{run}/model/data/part-00000.parquet", pa.table({"numClasses": [3]}))
    lake_env.put(f"{run}/export/classifier.npz", b"arrays")
    lake_env.put(f"{run}/export/classifier.json", b"{}")
    return run


def test_the_classifier_trained_on_erased_images_is_named_and_its_held_out_rows_erased(lake_env):
    run = _add_classifier(lake_env)
    store, selection = lake_env.store, select(lake_env.lake, paths=["Kiwi/k1.jpg"])
    lines = []
    erase(store, selection, confirm=True, out=lines.append)
    assert _paths_in(store, f"{run}/held_out/") == [lake_env.paths["Banana"][1]]
    assert any(line.startswith(f"model {lake_env.lake.uri(run)}: trained on erased images") and "next run" in line
               for line in lines), lines
    assert store.list(f"{run}/export/"), "the classifier stays unless --drop-pca-models"


def test_drop_pca_models_also_deletes_the_classifier_of_that_pca(lake_env):
    run = _add_classifier(lake_env)
    erase(lake_env.store, select(lake_env.lake, paths=["Kiwi/k1.jpg"]), confirm=True, drop_pca_models=True,
          out=lambda _: None)
    assert lake_env.store.list(f"{run}/") == []
