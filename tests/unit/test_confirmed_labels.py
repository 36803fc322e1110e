"""The users' confirmed labels (labels/): files read in the order written, rows resolved against the
photos under uploads/, the digest the next run compares, and the manifest the classifier job reads."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import MANIFEST_LABELS_COLUMNS, Lake
from fruits_pipeline import storage
from fruits_pipeline.confirmed_labels import (ConfirmedLabels, LabelRow, confirmed_labels, label_problem, labels_digest,
                                              modified_at, read_label_files, resolve_labels, write_labels_manifest)

PHOTOS = ("uploads/2026-12-02/u1/8f3c.heic", "uploads/2026-12-02/u2/a b.jpg", "uploads/old.png")
T0 = 1_800_000_000  # an mtime, in seconds


@pytest.fixture
def lake(tmp_path) -> Lake:
    root = tmp_path / "lake"
    for key in PHOTOS + ("raw/Apple/1.jpg",):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"photo")
    return Lake(f"file://{root}")


def uploads_of(lake: Lake) -> set[str]:
    """What validation hands over: the canonical URIs of the files under uploads/."""
    return set(storage.list_files(lake.uploads(), None))


def label_file(lake: Lake, name: str, rows: list[tuple], *, at: float, columns=("path", "label")) -> Path:
    """Write labels/<name> (CSV or Parquet by its suffix) with ``rows`` and the modification time ``at``."""
    path = Path(lake.local_root, "labels", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        pq.write_table(pa.table({column: [row[i] for row in rows] for i, column in enumerate(columns)},
                                schema=pa.schema([(column, pa.string()) for column in columns])), path)
    else:
        def cell(value):
            return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value
        path.write_text("\n".join([",".join(columns)] + [",".join(cell(v) for v in row) for row in rows]) + "\n",
                        encoding="utf-8")
    os.utime(path, (at, at))
    return path


def uri(lake: Lake, key: str) -> str:
    return lake.uri(key)


def test_csv_and_parquet_rows_are_read_as_written_in_the_order_files_were_written(lake):
    # Written: b.parquet first, then a.csv: the listing's (name) order is not the order of writing.
    label_file(lake, "a.csv", [(PHOTOS[0], "Kiwi"), (PHOTOS[1], "007")], at=T0 + 10,
               columns=("path", "label"))
    label_file(lake, "sub/b.parquet", [(PHOTOS[2], "Pear")], at=T0)
    rows, problems = read_label_files(lake, None)
    assert problems == []
    assert rows == [LabelRow(uri(lake, "labels/sub/b.parquet"), 1, PHOTOS[2], "Pear"),
                    LabelRow(uri(lake, "labels/a.csv"), 1, PHOTOS[0], "Kiwi"),
                    LabelRow(uri(lake, "labels/a.csv"), 2, PHOTOS[1], "007")]  # text, not the number 7


def test_same_mtime_falls_back_to_the_name_and_hidden_files_are_skipped(lake):
    label_file(lake, "2.csv", [(PHOTOS[0], "Two")], at=T0)
    label_file(lake, "1.csv", [(PHOTOS[0], "One")], at=T0)
    label_file(lake, ".writing-x.csv", [(PHOTOS[0], "Hidden")], at=T0 + 5)
    label_file(lake, "_SUCCESS", [], at=T0 + 5)
    rows, problems = read_label_files(lake, None)
    assert [row.label for row in rows] == ["One", "Two"] and problems == []
    assert resolve_labels(rows, lake, uploads_of(lake)).accepted == {uri(lake, PHOTOS[0]): "Two"}


def test_extra_csv_columns_are_ignored_and_quoted_values_kept(lake):
    path = Path(lake.local_root, "labels", "app.csv")
    path.parent.mkdir(parents=True)
    path.write_text('\ufefflabel,user,path\n"Apple, red",u1,uploads/old.png\n', encoding="utf-8")  # BOM, any order
    rows, problems = read_label_files(lake, None)
    assert problems == [] and rows == [LabelRow(uri(lake, "labels/app.csv"), 1, "uploads/old.png", "Apple, red")]


def test_the_last_row_wins_across_two_files_written_in_order(lake):
    label_file(lake, "z-first.csv", [(PHOTOS[0], "Apple"), (PHOTOS[1], "Kiwi")], at=T0)
    label_file(lake, "a-second.parquet", [(PHOTOS[0], "Pear")], at=T0 + 60)
    result = confirmed_labels(lake, None, lambda uris: (uploads_of(lake), set()))
    assert result.accepted == {uri(lake, PHOTOS[0]): "Pear", uri(lake, PHOTOS[1]): "Kiwi"}
    assert (result.files, result.rows, result.superseded, result.rejected) == (2, 3, 1, [])
    # Written the other way round, the other label wins.
    os.utime(Path(lake.local_root, "labels", "z-first.csv"), (T0 + 120, T0 + 120))
    assert confirmed_labels(lake, None, lambda uris: (uploads_of(lake), set())).accepted[uri(lake, PHOTOS[0])] == "Apple"


def test_the_key_and_the_full_uri_of_a_photo_are_one_path(lake):
    full = uri(lake, PHOTOS[1])
    assert full.startswith("file:///")
    rows = [LabelRow("f", 1, PHOTOS[1], "Apple"),
            LabelRow("f", 2, full.replace(" ", "%20"), "Kiwi"),  # an escaped URI
            LabelRow("f", 3, full.replace("file:///", "file:/"), "Pear"),  # Spark's spelling
            LabelRow("f", 4, full, "Plum"),
            LabelRow("f", 5, lake.local_root + "/" + PHOTOS[0], "Fig")]  # an absolute local path
    result = resolve_labels(rows, lake, uploads_of(lake))
    assert result.accepted == {uri(lake, PHOTOS[0]): "Fig", full: "Plum"} and result.superseded == 3


@pytest.mark.parametrize("path, reason", [
    ("raw/Apple/1.jpg", "not_an_upload"),  # takes its folder's label
    ("s3://another-bucket/uploads/old.png", "not_an_upload"),
    ("file:///elsewhere/uploads/old.png", "not_an_upload"),
    ("reports/r1.json", "not_an_upload"),
    ("", "not_an_upload"),
    (None, "not_an_upload"),
    ("uploads/never.jpg", "unknown_path"),
    ("uploads", "not_an_upload"),
])
def test_each_path_rejection_names_the_file_row_path_and_label(lake, path, reason):
    rows = [LabelRow("file:///l/labels/day1.csv", 7, path, "Kiwi")]
    result = resolve_labels(rows, lake, uploads_of(lake))
    assert result.accepted == {}
    [rejected] = result.rejected
    assert {k: rejected[k] for k in ("file", "row", "path", "label", "reason")} == \
        {"file": "file:///l/labels/day1.csv", "row": 7, "path": path, "label": "Kiwi", "reason": reason}
    assert rejected["detail"].startswith(f"file:///l/labels/day1.csv row 7: path {path!r} labelled 'Kiwi': ")


def test_an_erased_photo_is_an_unknown_path(lake):
    os.remove(Path(lake.local_root, PHOTOS[2]))
    result = resolve_labels([LabelRow("f", 1, PHOTOS[2], "Pear")], lake, uploads_of(lake))
    assert [row["reason"] for row in result.rejected] == ["unknown_path"] and "erased" in result.rejected[0]["detail"]


@pytest.mark.parametrize("label, reason", [
    ("", "empty_label"), ("   ", "empty_label"), (None, "empty_label"),
    ("a/b", "unsafe_label"), ("a\\b", "unsafe_label"), ("tab\there", "unsafe_label"), ("line\nbreak", "unsafe_label"),
    (".", "unsafe_label"), ("..", "unsafe_label"), ("Apple:red", "unsafe_label"), ("50%41", "unsafe_label"),
    (" Apple", "unsafe_label"), ("Apple ", "unsafe_label"), ("é" * 128, "label_too_long"),
])
def test_each_label_rejection(lake, label, reason):
    result = resolve_labels([LabelRow("f", 1, PHOTOS[0], label)], lake, uploads_of(lake))
    assert [row["reason"] for row in result.rejected] == [reason] and result.accepted == {}
    assert repr(label) in result.rejected[0]["detail"]


@pytest.mark.parametrize("label", ["apple red", "Pomme de terre (rouge)", "50% off", "é" * 127, "x" * 255, "A.B",
                                   "...a", "Äpfel", "🍎"])
def test_labels_a_folder_can_hold_are_accepted_literally(lake, label):
    assert label_problem(label) is None
    assert resolve_labels([LabelRow("f", 1, PHOTOS[0], label)], lake, uploads_of(lake)).accepted == \
        {uri(lake, PHOTOS[0]): label}


def test_a_later_invalid_row_does_not_erase_an_earlier_valid_label(lake):
    rows = [LabelRow("f1", 1, PHOTOS[0], "Apple"), LabelRow("f2", 1, PHOTOS[0], ""),
            LabelRow("f2", 2, PHOTOS[0], "a/b")]
    result = resolve_labels(rows, lake, uploads_of(lake))
    assert result.accepted == {uri(lake, PHOTOS[0]): "Apple"}
    assert [row["reason"] for row in result.rejected] == ["empty_label", "unsafe_label"]
    assert all("the label 'Apple' of f1 row 1 stands" in row["detail"] for row in result.rejected)


def test_a_file_that_is_no_label_file_is_reported_and_the_others_still_read(lake):
    label_file(lake, "good.csv", [(PHOTOS[0], "Kiwi")], at=T0)
    Path(lake.local_root, "labels", "notes.txt").write_text("path,label\nuploads/old.png,Pear\n")
    Path(lake.local_root, "labels", "garbage.parquet").write_bytes(b"\x00not parquet at all")
    Path(lake.local_root, "labels", "latin1.csv").write_bytes(b"path,label\nuploads/old.png,Pomme\xe9\n")
    Path(lake.local_root, "labels", "ragged.csv").write_text("path,label\nuploads/old.png,Pear,extra\n")
    Path(lake.local_root, "labels", "empty.csv").write_bytes(b"")
    result = confirmed_labels(lake, None, lambda uris: (uploads_of(lake), set()))
    assert result.accepted == {uri(lake, PHOTOS[0]): "Kiwi"} and result.files == 1 and result.rows == 1
    problems = {problem["file"].rsplit("/", 1)[1]: problem["reason"] for problem in result.file_problems}
    assert problems == {"notes.txt": "not_csv_or_parquet", "garbage.parquet": "unreadable",
                        "latin1.csv": "unreadable", "ragged.csv": "unreadable", "empty.csv": "unreadable"}
    assert all(problem["detail"].startswith(problem["file"]) for problem in result.file_problems)
    assert result.summary()["file_problems"] == result.file_problems


def test_missing_columns_are_a_file_problem(lake):
    label_file(lake, "no_label.csv", [(PHOTOS[0], "u1")], at=T0, columns=("path", "user"))
    label_file(lake, "no_path.parquet", [("Kiwi",)], at=T0, columns=("label",))
    label_file(lake, "header_only.csv", [], at=T0)
    rows, problems = read_label_files(lake, None)
    assert rows == []
    assert {p["file"].rsplit("/", 1)[1]: p["reason"] for p in problems} == {"no_label.csv": "missing_columns",
                                                                            "no_path.parquet": "missing_columns"}
    assert "'label'" in next(p["detail"] for p in problems if p["file"].endswith("no_label.csv"))


def test_a_parquet_column_that_is_not_text_is_unreadable_and_dictionary_text_is_read(lake):
    folder = Path(lake.local_root, "labels")
    folder.mkdir()
    pq.write_table(pa.table({"path": [PHOTOS[0]], "label": [7]}), folder / "ints.parquet")
    pq.write_table(pa.table({"path": pa.array([PHOTOS[1]]).dictionary_encode(),
                             "label": pa.array(["Kiwi"], pa.large_string())}), folder / "dict.parquet")
    rows, problems = read_label_files(lake, None)
    assert [(row.path, row.label) for row in rows] == [(PHOTOS[1], "Kiwi")]
    assert [(p["file"].rsplit("/", 1)[1], p["reason"]) for p in problems] == [("ints.parquet", "unreadable")]


def test_parquet_nulls_are_rejected_rows_not_a_broken_file(lake):
    label_file(lake, "nulls.parquet", [(None, "Kiwi"), (PHOTOS[0], None), (PHOTOS[1], "Fig")], at=T0)
    result = confirmed_labels(lake, None, lambda uris: (uploads_of(lake), set()))
    assert result.accepted == {uri(lake, PHOTOS[1]): "Fig"}
    assert [(row["row"], row["reason"]) for row in result.rejected] == [(1, "not_an_upload"), (2, "empty_label")]


def test_the_digest_is_stable_and_independent_of_order():
    one = {"file:///l/uploads/a.jpg": "Apple", "file:///l/uploads/b.jpg": "Kiwi"}
    other = dict(reversed(list(one.items())))
    expected = hashlib.sha256(b"file:///l/uploads/a.jpg\tApple\nfile:///l/uploads/b.jpg\tKiwi\n").hexdigest()
    assert labels_digest(one) == labels_digest(other) == expected
    assert labels_digest(one | {"file:///l/uploads/b.jpg": "Pear"}) != expected
    assert labels_digest({}) == hashlib.sha256(b"").hexdigest()


def test_the_summary_counts_reasons_and_keeps_a_few_examples(lake):
    rows = [LabelRow("f", n, f"uploads/missing{n}.jpg", "Kiwi") for n in range(1, 6)]
    rows += [LabelRow("f", 6, PHOTOS[0], ""), LabelRow("f", 7, PHOTOS[1], "Fig")]
    summary = resolve_labels(rows, lake, uploads_of(lake)).summary()
    assert {k: summary[k] for k in ("files", "rows", "accepted", "rejected", "rejected_by_reason", "file_problems")} == \
        {"files": 1, "rows": 7, "accepted": 1, "rejected": 6,
         "rejected_by_reason": {"empty_label": 1, "unknown_path": 5}, "file_problems": []}
    assert [example["row"] for example in summary["rejected_examples"]["unknown_path"]] == [1, 2, 3]
    assert summary["rejected_examples"]["empty_label"][0]["reason"] == "empty_label"
    assert summary["digest"] == labels_digest({uri(lake, PHOTOS[1]): "Fig"})


def test_the_manifest_is_written_read_back_and_replaced(lake):
    accepted = {uri(lake, PHOTOS[1]): "Kiwi", uri(lake, PHOTOS[0]): "Apple"}
    written = write_labels_manifest(lake, "r1", accepted, None)
    assert written == lake.manifest_labels("r1")
    table = pq.read_table(Path(lake.local_root, "manifests", "r1", "labels"))
    assert table.schema == pa.schema([(name, getattr(pa, kind)()) for name, kind in MANIFEST_LABELS_COLUMNS])
    assert table.to_pylist() == [{"path": path, "label": label} for path, label in sorted(accepted.items())]
    stray = Path(lake.local_root, "manifests", "r1", "labels", "part-00001.parquet")  # say, an earlier writer's
    pq.write_table(table, stray)
    write_labels_manifest(lake, "r1", {}, None)  # a rerun that accepts nothing: an empty table, the old ones gone
    files = os.listdir(Path(lake.local_root, "manifests", "r1", "labels"))
    assert files == ["part-00000.parquet"]
    empty = pq.read_table(Path(lake.local_root, "manifests", "r1", "labels"))
    assert empty.num_rows == 0 and empty.column_names == ["path", "label"]


@pytest.mark.parametrize("make_folder", [False, True])
def test_no_labels_folder_or_an_empty_one_accepts_nothing_without_error(lake, make_folder):
    if make_folder:
        Path(lake.local_root, "labels").mkdir()
    result = confirmed_labels(lake, None, lambda uris: (uploads_of(lake), set()))
    assert result == ConfirmedLabels()
    assert result.summary() == {"files": 0, "rows": 0, "accepted": 0, "rejected": 0, "superseded": 0,
                                "rejected_by_reason": {}, "rejected_examples": {}, "file_problems": [],
                                "digest": hashlib.sha256(b"").hexdigest()}


def test_s3_listing_times_order_the_files_too():
    from datetime import datetime, timezone

    at = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
    assert modified_at({"LastModified": at}) == at.timestamp()
    assert modified_at({"mtime": 12.5}) == 12.5 and modified_at({}) == 0.0


def test_an_s3_lake_resolves_keys_and_uris_alike():
    lake = Lake("s3://fruits-lake")
    uploads = {"s3://fruits-lake/uploads/a b.jpg"}
    rows = [LabelRow("s3://fruits-lake/labels/1.csv", 1, "uploads/a b.jpg", "Apple"),
            LabelRow("s3://fruits-lake/labels/1.csv", 2, "s3://fruits-lake/uploads/a%20b.jpg", "Kiwi"),
            LabelRow("s3://fruits-lake/labels/1.csv", 3, "s3://other/uploads/a b.jpg", "Pear"),
            LabelRow("s3://fruits-lake/labels/1.csv", 4, "/uploads/a b.jpg", "Fig")]
    result = resolve_labels(rows, lake, uploads)
    assert result.accepted == {"s3://fruits-lake/uploads/a b.jpg": "Kiwi"}
    assert [row["reason"] for row in result.rejected] == ["not_an_upload", "not_an_upload"]


def test_a_label_for_a_rejected_photo_is_rejected_with_the_reason_and_the_others_stand(lake):
    rows = [LabelRow("f", 1, PHOTOS[0], "Kiwi"), LabelRow("f", 2, PHOTOS[1], "Lime")]
    from fruits_pipeline.confirmed_labels import upload_uri

    result = resolve_labels(rows, lake, uploads_of(lake), rejected={upload_uri(lake, PHOTOS[1])})
    assert result.accepted == {upload_uri(lake, PHOTOS[0]): "Kiwi"}
    assert [(row["row"], row["reason"]) for row in result.rejected] == [(2, "rejected_upload")]
    assert "no features to train on" in result.rejected[0]["detail"]


