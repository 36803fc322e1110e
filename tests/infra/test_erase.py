"""Right to erasure on a file:// lake and on a versioned moto S3 lake with manifests, features and PCA Parquet."""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

import boto3
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


def add_uploads(env) -> None:
    """Four app photos (no label), featurized and predicted by one run; labels/ the app wrote back."""
    uris = [env.lake.uri(key) for key in UPLOADS]
    for key in UPLOADS:
        env.put(key, f"photo {key}".encode())
    n, nulls = len(uris), pa.array([None] * len(uris), pa.string())
    _parquet(env.put, f"manifests/{UPLOAD_RUN}/valid/part-00000.parquet", pa.table({"path": uris, "label": nulls}))
    _parquet(env.put, f"features/batch={UPLOAD_RUN}/part-00000.parquet", pa.table({
        "path": uris, "label": nulls, "features": pa.array([[0.5] * 4] * n, FEATURES), "model": ["mobilenet_v2"] * n}))
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
