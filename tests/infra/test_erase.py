"""Right to erasure on a file:// lake and on a versioned moto S3 lake with manifests, features and PCA Parquet."""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra_testing import REGION
from fruits_infra.cli import main
from fruits_infra.erase import ErasureError, Selection, erase, select, store_for
from fruits_contract.lake import Lake

IMAGES = {  # label -> file names; labels with spaces as in Fruits-360
    "Apple Red 1": ["a1.jpg", "a2.jpg"],
    "Banana": ["b1.jpg", "b2.jpg", "b3.jpg"],
    "Kiwi": ["k1.jpg"],
}
RUNS = ("2026-11-20T000000Z", "2026-11-21T000000Z")
FEATURES = pa.list_(pa.float32())
NOTHING_LEFT = "Nothing to erase: no image and no derived row matches (already erased, or never uploaded)."


class Starting(str):
    """Equal to any line starting with this text."""

    def __eq__(self, other):
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__


# A lake written before the ledger: every derived Parquet file is read (its path column), and erase says so.
NO_LEDGER_LOOKUP = Starting("lookup: full scan (the lake has no ledger")


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
    assert found.empty and rerun == [NO_LEDGER_LOOKUP, NOTHING_LEFT]
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


# ---------------------------------------------------------------- the app's photos: uploads/, predictions/, labels/

UPLOAD_RUN = "2026-12-02T000000Z"
X, Y, Z, W = ("uploads/2026-12-02/u1/x.jpg", "uploads/2026-12-02/u1/my photo.heic",
              "uploads/2026-12-02/u10/z.jpg", "uploads/2026-12-03/u2/w.png")
UPLOADS = (X, Y, Z, W)
TOP = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float32())]))
LABELS_CSV, LABELS_PARQUET = "labels/2026-12-02/app.csv", "labels/confirmed.parquet"


def spelled_in_full(env, key: str) -> str:
    """How the app may spell a photo's full URI: Spark's ``file:/`` with percent-escapes on a file lake."""
    return "file:" + quote(str(env.root / key)) if isinstance(env, LocalLake) else env.lake.uri(key)


def label_csv(env) -> bytes:
    # CRLF, a quoted field, both spellings of X: the kept records must come back byte for byte.
    return (f"path,label\r\n{X},Kiwi\r\n\"{env.lake.uri(Z)}\",Banana\r\n{spelled_in_full(env, X)},Kiwi\r\n"
            f"{W},\"Apple Red 1\"\r\n{spelled_in_full(env, Y)},Kiwi\r\n").encode()


def _featurized_uploads(env, run: str, keys) -> list[str]:
    """App photos (no label) at ``keys``, in ``run``'s valid manifest and feature batch; returns their URIs."""
    uris = [env.lake.uri(key) for key in keys]
    for key in keys:
        env.put(key, f"photo {key}".encode())
    n, nulls = len(uris), pa.array([None] * len(uris), pa.string())
    _parquet(env.put, f"manifests/{run}/valid/part-00000.parquet", pa.table({"path": uris, "label": nulls}))
    _parquet(env.put, f"features/batch={run}/part-00000.parquet", pa.table({
        "path": uris, "label": nulls, "features": pa.array([[0.5] * 4] * n, FEATURES), "model": ["mobilenet_v2"] * n}))
    return uris


def add_uploads(env) -> None:
    """Four app photos (no label), featurized and predicted by one run; labels/ the app wrote back."""
    uris = _featurized_uploads(env, UPLOAD_RUN, UPLOADS)
    n = len(uris)
    _parquet(env.put, f"predictions/{UPLOAD_RUN}/part-00000.parquet", pa.table({
        "path": uris, "label": pa.array(["Kiwi", None, "Banana", "Kiwi"], pa.string()),
        "probability": pa.array([0.9, 0.4, 0.8, 0.95], pa.float32()),
        "top": pa.array([[{"label": "Kiwi", "probability": 0.9}, {"label": "Banana", "probability": 0.05}]] * n, TOP),
        "unsure": [False, True, False, False], "model": [RUNS[1]] * n}))
    env.put(f"predictions/{UPLOAD_RUN}/_job_result.json", b'{"predicted": 4, "unsure": 1}')
    env.put(LABELS_CSV, b"path,label\n" + X.encode() + b",Kiwi\n")  # an older version of the file (S3 keeps it)
    env.put(LABELS_CSV, label_csv(env))
    _parquet(env.put, LABELS_PARQUET, pa.table({
        "path": [env.lake.uri(X), W, X, Z], "label": ["Kiwi", "Apple Red 1", "Kiwi", "Banana"]}))


@pytest.fixture
def uploads_env(lake_env):
    add_uploads(lake_env)
    return lake_env


def test_erasing_an_upload_removes_the_photo_its_rows_predictions_and_labels(uploads_env):
    env = uploads_env
    store, lake = env.store, env.lake
    selection = select(lake, paths=[X])
    lines = []
    erase(store, selection, confirm=True, out=lines.append)

    assert env.all_versions(X) == 0 and not (set(UPLOADS) - {X}) - set(store.list("uploads/"))
    assert f"upload {lake.uri(X)}: deleted (1 version)" in lines
    kept = [lake.uri(key) for key in (Y, Z, W)]
    for root in ("manifests/", "features/", "predictions/"):
        assert sorted(p for p in _paths_in(store, root) if "/uploads/" in p) == sorted(kept), root
    predictions = pq.read_table(io.BytesIO(store.read(f"predictions/{UPLOAD_RUN}/part-00000.parquet")))
    assert predictions.schema.field("top").type == TOP and predictions.column("unsure").to_pylist() == [True, False, False]
    assert store.list(f"predictions/{UPLOAD_RUN}/_job_result.json")
    # The CSV: both spellings of X gone, header and every other record exactly as the app wrote them.
    rows = label_csv(env).split(b"\r\n")
    assert store.read(LABELS_CSV) == b"\r\n".join([rows[0], rows[2], rows[4], rows[5], b""])
    labels = pq.read_table(io.BytesIO(store.read(LABELS_PARQUET)))
    assert labels.to_pylist() == [{"path": W, "label": "Apple Red 1"}, {"path": Z, "label": "Banana"}]
    assert f"labels {lake.uri(LABELS_CSV)}: removed 2, kept 3" in "\n".join(lines)
    assert lines[-1] == "Erased 1 uploads, 3 derived rows in 3 Parquet files, 4 label rows in 2 label files."
    if isinstance(env, S3Lake):  # the old version of the label file named X too
        assert env.all_versions(LABELS_CSV) == 1 and env.all_versions(LABELS_PARQUET) == 1

    before = env.snapshot()
    rerun = []
    assert erase(store, selection, confirm=True, out=rerun.append).empty
    assert rerun == [NO_LEDGER_LOOKUP, NOTHING_LEFT]
    assert env.snapshot() == before


def test_every_spelling_of_an_upload_selects_the_same_photo(tmp_path):
    env = LocalLake(tmp_path / "lake")
    expected = Selection(frozenset([env.lake.uri(X)]))
    for spelling in (X, env.lake.uri(X), str(env.root / X), f"file:{env.root / X}"):
        assert select(env.lake, paths=[spelling]) == expected, spelling


def test_the_dry_run_lists_predictions_and_labels_and_changes_nothing(uploads_env):
    env = uploads_env
    before = env.snapshot()
    lines = []
    found = erase(env.store, select(env.lake, paths=[env.lake.uri(X), "Kiwi/k1.jpg"]), confirm=False, out=lines.append)
    assert env.snapshot() == before
    assert sorted(found.uploads) == [X] and sorted(found.raw) == ["raw/Kiwi/k1.jpg"]
    text = "\n".join(lines)
    assert f"rows {env.lake.uri('predictions', UPLOAD_RUN, 'part-00000.parquet')}: would remove 1, keep 3" in text
    assert f"labels {env.lake.uri(LABELS_CSV)}: would remove 2, keep 3" in text
    assert f"labels {env.lake.uri(LABELS_PARQUET)}: would remove 2, keep 2" in text
    assert lines[-1].startswith("Dry run: would erase 1 raw objects, 1 uploads, 6 derived rows in 6 Parquet files, "
                                "4 label rows in 2 label files.")


def test_a_prefix_under_uploads_erases_one_users_folder(uploads_env, capsys):
    env = uploads_env
    args = ["erase", "--lake", env.lake.base_uri, "--region", REGION, "--prefix", "uploads/2026-12-02/u1/", "--yes"]
    assert main(args) == 0  # on S3: moto's mock answers the command's own client
    out = capsys.readouterr().out
    assert sorted(env.store.list("uploads/")) == sorted([Z, W]), "u10/ is another user: not under u1/"
    assert env.all_versions(X) == 0 and env.all_versions(Y) == 0
    assert sorted(p for p in _paths_in(env.store, "predictions/")) == sorted(env.lake.uri(k) for k in (Z, W))
    # Y's label row spelled its URI with %20 for the space: compared canonically, it goes too.
    rows = label_csv(env).split(b"\r\n")
    assert env.store.read(LABELS_CSV) == b"\r\n".join([rows[0], rows[2], rows[4], b""])
    assert "Erased 2 uploads, 6 derived rows in 3 Parquet files, 5 label rows in 2 label files." in out


@pytest.mark.parametrize("prefix", ["uploads", "uploads/", "LAKE/uploads/", "LAKE/uploads"])
def test_a_prefix_taking_all_of_uploads_is_refused(tmp_path, prefix):
    lake = Lake(f"file://{tmp_path}")
    with pytest.raises(ErasureError, match=r"selects all of uploads/"):
        select(lake, prefixes=[prefix.replace("LAKE", lake.base_uri)])


def test_an_unparsable_label_file_is_named_with_why_and_left_alone(uploads_env):
    env = uploads_env
    broken = {
        "labels/latin1.csv": f"path,label\n{X},Pomme \xe9t\xe9\n".encode("latin-1"),
        "labels/quotes.csv": f'path,label\n"{X}"x,Kiwi\n'.encode(),
        "labels/no-path.csv": f"photo,label\n{X},Kiwi\n".encode(),
        "labels/truncated.parquet": b"PAR1 not really",
    }
    for key, data in broken.items():
        env.put(key, data)
    lines = []
    found = erase(env.store, select(env.lake, paths=[X]), confirm=True, out=lines.append)
    assert sorted(found.unreadable) == sorted(broken)
    assert "UTF-8" in found.unreadable["labels/latin1.csv"]
    assert "not CSV" in found.unreadable["labels/quotes.csv"]
    assert "no path column" in found.unreadable["labels/no-path.csv"]
    assert "Parquet" in found.unreadable["labels/truncated.parquet"]
    for key, data in broken.items():
        assert env.store.read(key) == data, key
        assert any(line.startswith(f"unreadable {env.lake.uri(key)}: ") and "left as is" in line for line in lines), key
    assert f"labels {env.lake.uri(LABELS_CSV)}: removed 2, kept 3" in "\n".join(lines), "the readable files still are"


def test_the_pcas_kept_moments_go_with_erased_features(lake_env):
    """pca/<run>/_moments.npz sums every featurized image: kept, the next PCA would merge the erased ones in."""
    lake_env.put(f"pca/{RUNS[1]}/_moments.npz", b"sums")
    lines = []
    erase(lake_env.store, select(lake_env.lake, paths=["Kiwi/k1.jpg"]), confirm=False, out=lines.append)
    assert lake_env.store.list(f"pca/{RUNS[1]}/_moments.npz") and any(l.startswith("moments ") for l in lines)
    erase(lake_env.store, select(lake_env.lake, paths=["Kiwi/k1.jpg"]), confirm=True, out=lines.append)
    assert lake_env.store.list(f"pca/{RUNS[1]}/_moments.npz") == []


def test_erasing_an_upload_removes_its_ledger_rows_and_every_file_that_held_them(tmp_path):
    """The ledger is Delta Lake: its rows go through Delta (only the partition holding them is rewritten),
    then vacuum deletes the superseded files, which still held the erased path."""
    from fruits_pipeline import ledger

    env = LocalLake(tmp_path / "lake")
    env.paths = build_lake(env.put, env.lake)
    add_uploads(env)
    env.put(f"features/batch={UPLOAD_RUN}/_job_result.json", b"{}")
    assert ledger.record_run(env.lake, UPLOAD_RUN, None, committed=True)["featurized"] == len(UPLOADS)
    ledger.add_arrivals(env.lake, [ledger.Arrival(env.lake.uri(X), 1, "t", "event")], None)
    erased = env.lake.uri(X)

    def files_holding_it():
        return [p for p in (tmp_path / "lake" / "ledger").rglob("*.parquet")
                if erased in pq.read_table(p, columns=["path"]).column("path").to_pylist()]

    assert files_holding_it(), "the ledger's files hold the path before the erasure"

    lines = []
    erase(env.store, select(env.lake, paths=[X]), confirm=True, out=lines.append)
    ledger.forget_open_tables()
    assert erased not in {row["path"] for row in ledger.done_rows(env.lake, None)}
    assert erased not in ledger.pending_arrivals(env.lake, None)
    assert len(ledger.done_rows(env.lake, None)) == len(UPLOADS) - 1, "the other photos' rows stay"
    assert files_holding_it() == [], "vacuum deleted the superseded files"
    assert any(line.startswith(f"ledger {env.lake.uri('ledger')}: removed 2 row(s)") for line in lines), lines


# ---------------------------------------------------------------- issue 28: the ledger says where a photo is

HISTORY = tuple(f"2026-12-{day:02d}T000000Z" for day in range(3, 10))  # seven more daily batches
X_AGAIN = "uploads/2026-12-05/u3/x-again.jpg"  # the same bytes as X, uploaded later: a duplicate naming X


def add_history(env) -> dict[str, list[str]]:
    """Seven more daily batches of two uploads each (manifests, features, predictions, confirmed labels), one
    of them holding a duplicate of X; a PCA and a classifier per day, thinned by retention as the jobs do
    (superseded copies: the PCA's report and job result only, no held_out/); the ledger recording every run.
    Returns the derived Parquet files an erasure of X must read: {"batch": ..., "copies": ..., "labels": ...}."""
    from fruits_contract.lake import COPIES_KEPT
    from fruits_pipeline import ledger

    lake, everyone, labels = env.lake, [env.lake.uri(key) for key in UPLOADS], []
    for day, run in enumerate(HISTORY):
        keys = [f"uploads/{run[:10]}/u{day}/{name}.jpg" for name in ("p", "q")]
        uris = _featurized_uploads(env, run, keys)
        everyone += uris
        n, nulls = len(uris), pa.array([None] * len(uris), pa.string())
        _parquet(env.put, f"predictions/{run}/part-00000.parquet", pa.table({
            "path": uris, "label": nulls, "probability": pa.array([0.5] * n, pa.float32())}))
        env.put(f"features/batch={run}/_job_result.json", b"{}")
        # Every run's resolved confirmed labels: X's since the app confirmed it.
        labels.append(f"manifests/{run}/labels/labels.parquet")
        _parquet(env.put, labels[-1], pa.table({"path": [lake.uri(X)], "label": ["Kiwi"]}))
        # This run's PCA (every row so far) and classifier; retention keeps the newest COPIES_KEPT whole.
        whole = day >= len(HISTORY) - COPIES_KEPT
        env.put(f"pca/{run}/_pca_report.json", b'{"k": 2}')
        env.put(f"pca/{run}/_job_result.json", b"{}")
        _parquet(env.put, f"classifier/{run}/model/data/part-00000.parquet", pa.table({"numClasses": [3]}))
        env.put(f"classifier/{run}/export/classifier.npz", b"arrays")
        if whole:
            _parquet(env.put, f"pca/{run}/part-00000.parquet", pa.table({
                "path": everyone, "label": [None] * len(everyone),
                "pca_features": pa.array([[1.0, 2.0]] * len(everyone), FEATURES)}))
            _parquet(env.put, f"pca/{run}/_model/stages/1_PCA/data/part-00000.parquet", pa.table({"k": [2]}))
            _parquet(env.put, f"pca/{run}/_preview/part-00000.parquet", pa.table({"label": ["Kiwi"], "pc1": [1.0]}))
            _parquet(env.put, f"classifier/{run}/held_out/part-00000.parquet",
                     _table([(lake.uri(X), None), (uris[0], None)], prediction=pa.array([1, 0], pa.int32())))
    dup_run = HISTORY[2]
    env.put(X_AGAIN, f"photo {X}".encode())
    _parquet(env.put, f"features/batch={dup_run}/_duplicates/part-00000.parquet", pa.table({
        "path": [lake.uri(X_AGAIN)], "duplicate_of": [lake.uri(X)], "sha256": ["1" * 64]}))
    # X rejected once by a run's feature job too (its own batch's _rejects/).
    _parquet(env.put, f"features/batch={UPLOAD_RUN}/_rejects/part-00000.parquet", pa.table({
        "path": [lake.uri(X)], "reason": ["decode"], "detail": ["first attempt"]}))
    env.put(f"features/batch={UPLOAD_RUN}/_job_result.json", b"{}")
    for run in (*RUNS, UPLOAD_RUN, *HISTORY):
        ledger.record_run(lake, run, None, committed=True)
    ledger.forget_open_tables()
    derived = _derived_parquet(env)
    batch = [key for key in derived if any(key.startswith(prefix) for run in (UPLOAD_RUN, dup_run)
                                           for prefix in (f"features/batch={run}/", f"manifests/{run}/", f"predictions/{run}/"))]
    copies = [key for key in derived if key.split("/")[0] == "pca" and key.count("/") == 2
              and key.split("/")[1] in (RUNS[1], *HISTORY)]
    copies += [key for key in derived if "/held_out/" in key]
    return {"batch": sorted(set(batch) - set(labels)), "copies": sorted(copies), "labels": labels}


def _derived_parquet(env) -> list[str]:
    return sorted(key for root in ("manifests", "features", "pca", "classifier", "predictions")
                  for key in env.store.list(f"{root}/") if key.endswith(".parquet"))


def _count_opened(monkeypatch, store) -> list[str]:
    """The derived Parquet files the erasure opens, for their path column or whole."""
    opened = []

    def counting(method):
        def wrapper(key, *args, **kwargs):
            if key.endswith(".parquet") and not key.startswith(("labels/", "ledger/")):
                opened.append(key)
            return method(key, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(store, "read", counting(store.read))
    if hasattr(store, "open_parquet"):
        monkeypatch.setattr(store, "open_parquet", counting(store.open_parquet))
    return opened


def _no_trace_of_x(env) -> None:
    from fruits_pipeline import ledger

    erased = env.lake.uri(X)
    assert env.all_versions(X) == 0
    for key in _derived_parquet(env):
        table = pq.read_table(io.BytesIO(env.store.read(key)))
        for column in ("path", "duplicate_of"):
            if column in table.column_names:
                assert erased not in table.column(column).to_pylist(), (key, column)
    assert all(X.encode() not in env.store.read(key) for key in (LABELS_CSV, LABELS_PARQUET))
    ledger.forget_open_tables()
    assert erased not in {row["path"] for row in ledger.done_rows(env.lake, None)}
    assert erased not in {row["duplicate_of"] for row in ledger.done_rows(env.lake, None)}


@pytest.fixture
def history_env(tmp_path):
    env = LocalLake(tmp_path / "lake")
    env.paths = build_lake(env.put, env.lake)
    add_uploads(env)
    env.expected = add_history(env)
    return env


def test_erasing_one_photo_reads_only_its_batches_and_the_copies_retention_keeps(history_env, monkeypatch):
    env = history_env
    expected = env.expected
    everything = _derived_parquet(env)
    opened = _count_opened(monkeypatch, env.store)
    lines = []
    erase(env.store, select(env.lake, paths=[X]), confirm=True, out=lines.append)

    # Read: X's batch (features with _rejects, manifests, predictions), the batch whose duplicate names X,
    # every run's confirmed labels, the PCA and held-out copies retention keeps; nothing of the other days.
    assert sorted(set(opened)) == sorted(expected["batch"] + expected["copies"] + expected["labels"])
    # 4 + 4 of the two batches, 2 + 3 PCA copies (build_lake's unfinished one and the newest three) and
    # 3 held_out/, 7 label manifests; of 63 derived Parquet files in the lake (what a full scan reads).
    assert len(set(opened)) == 4 + 4 + 2 + 3 + 3 + 7 < len(everything) == 63, len(everything)
    assert lines[0] == (f"lookup: ledger: batch(es) {UPLOAD_RUN}, {HISTORY[2]}; the path column of 23 derived "
                        "Parquet file(s) read: 8 of those runs, 8 of the PCA and held-out copies retention keeps, "
                        "7 confirmed-label manifest(s)"), lines[0]
    _no_trace_of_x(env)
    assert f"upload {env.lake.uri(X)}: deleted (1 version)" in lines
    assert X_AGAIN in env.store.list("uploads/"), "the duplicate's own photo stays"

    rerun = []  # the ledger has no row for X any more: the rerun checks everything, and finds nothing
    assert erase(env.store, select(env.lake, paths=[X]), confirm=True, out=rerun.append).empty
    assert rerun == [Starting("lookup: full scan (the ledger has no row for 1 of the 1 photo(s) selected"), NOTHING_LEFT]


def test_the_other_days_files_are_not_read_at_all(history_env):
    """Every derived file the ledger rules out is made unreadable: the erasure does not notice."""
    env = history_env
    needed = set(env.expected["batch"] + env.expected["copies"] + env.expected["labels"])
    garbage = [key for key in _derived_parquet(env) if key not in needed]
    for key in garbage:
        env.put(key, b"not Parquet: a file the erasure of X must not read")
    lines = []
    erase(env.store, select(env.lake, paths=[X]), confirm=True, out=lines.append)
    assert lines[0].startswith("lookup: ledger: ")
    assert lines[-1] == "Erased 1 uploads, 18 derived rows in 18 Parquet files, 4 label rows in 2 label files."
    assert all(env.store.read(key).startswith(b"not Parquet") for key in garbage)


def test_a_photo_the_ledger_never_saw_is_found_by_a_full_scan(history_env, monkeypatch):
    """A lake migrated half-way: X's batch is not in the ledger. Every derived file is read; X still goes."""
    from deltalake import DeltaTable
    from fruits_pipeline import ledger

    env = history_env
    DeltaTable(env.lake.ledger("done")).delete(f"batch = '{UPLOAD_RUN}'")
    ledger.forget_open_tables()
    everything = _derived_parquet(env)
    opened = _count_opened(monkeypatch, env.store)
    lines = []
    erase(env.store, select(env.lake, paths=[X]), confirm=True, out=lines.append)
    assert lines[0] == (f"lookup: full scan (the ledger has no row for 1 of the 1 photo(s) selected, e.g. "
                        f"{env.lake.uri(X)}): the path column of every derived Parquet file read, 63 file(s)")
    assert set(opened) == set(everything)
    _no_trace_of_x(env)


def test_a_label_folder_in_the_ledger_is_located_by_it(history_env, monkeypatch):
    """A prefix: the ledger's path column says which batches hold the label's images (raw/Kiwi/: RUNS[1])."""
    env = history_env
    opened = _count_opened(monkeypatch, env.store)
    lines = []
    erase(env.store, select(env.lake, labels=["Kiwi"]), confirm=True, out=lines.append)
    assert lines[0].startswith(f"lookup: ledger: batch(es) {RUNS[1]}; "), lines[0]
    assert not {key for key in opened if key.startswith(("features/", "predictions/"))} - {
        f"features/batch={RUNS[1]}/part-00000.parquet", f"features/batch={RUNS[1]}/_rejects/part-00000.parquet"}
    assert env.paths["Kiwi"][0] not in _paths_in(env.store, "")


def test_on_s3_a_feature_file_is_read_for_its_paths_only(aws, monkeypatch):
    """The path column of a feature file costs ranged reads of its footer and that column, not the file."""
    from fruits_infra.erase import _erased_rows

    env = S3Lake("fruits-erase-ranged")
    paths = [env.lake.uri("uploads", "d", f"{n}.jpg") for n in range(400)]
    key = "features/batch=r/part-00000.parquet"
    _parquet(env.put, key, pa.table({"path": paths, "features": pa.array(list(np.random.default_rng(0).random((400, 1280), dtype=np.float32)), FEATURES)}))
    size = env.client.head_object(Bucket=env.bucket, Key=f"{env.prefix}/{key}")["ContentLength"]
    fetched = []
    get_object = env.client.get_object

    def ranged(**kwargs):
        assert "Range" in kwargs, "no whole-object GET"
        answer = get_object(**kwargs)
        fetched.append(answer["ContentLength"])
        return answer

    monkeypatch.setattr(env.client, "get_object", ranged)
    with env.store.open_parquet(key) as handle:
        assert _erased_rows(handle, Selection(frozenset(paths[:3]))) == (3, 397)
    assert sum(fetched) < size / 20, (fetched, size)
