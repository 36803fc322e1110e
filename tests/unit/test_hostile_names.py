"""Hostile run ids and upload names: a run key safe for S3 and file systems and distinct per run id;
each upload processed under its literal key or rejected with a reason (docs/reliability.md)."""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pytest

from generated_images import write_generated_images
from fruits_contract.lake import Lake, run_key_for
from fruits_contract.names import unsafe_name_reason
from fruits_pipeline.validation import validate_uploads, write_manifests

SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
HOSTILE_RUN_IDS = [
    "manual/../../reports/x", "..", ".", "/", "a/b", "a b", "a..b", "a-b", "a_b", unicodedata.normalize("NFC", "été"), unicodedata.normalize("NFD", "été"), "ete",
    "ﬁle", "file", "run\x00id", "run\nid", " ", "", "x" * 250, "x" * 251, "🍎🍌", "🍎🍋",
    "2026-12-01T000000Z",  # shaped like the key of the scheduled run of that day
]


def test_every_run_id_gets_a_safe_key_of_its_own():
    keys = {run_id: run_key_for("manual", run_id, None) for run_id in HOSTILE_RUN_IDS}
    for run_id, key in keys.items():
        assert SAFE_KEY.match(key) and key not in (".", "..") and len(key) <= 120, (run_id, key)
        lake = Lake("s3://bucket/prefix")
        assert lake.features(key).startswith("s3://bucket/prefix/features/batch=") and "/" not in key
    assert len(set(keys.values())) == len(keys), "two run ids share a key"
    scheduled = run_key_for("scheduled", "scheduled__2026-12-01", datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert scheduled == "2026-12-01T000000Z" and scheduled not in keys.values()


def test_a_safe_run_id_keeps_its_name():
    assert run_key_for("manual", "manual__2026-11-22", None) == "manual__2026-11-22"
    assert run_key_for("manual", "backfill_1", None) == "backfill_1"


@pytest.mark.parametrize("relative, verdict", [
    ("kiwi/a.jpg", None),
    ("kiwi/" + "n" * 1000 + ".jpg", None),
    ("kiwi/" + unicodedata.normalize("NFD", "café.jpg"), None),
    ("kiwi/50%off (1).jpg", None),
    ("kiwi/100%.jpg", None),
    ("kiwi/a#b?c+d&e=f;g[1]{2}.jpg", None),
    ("kiwi/50%41 (1).jpg", "'%41'"),  # Hadoop reads it as 50A (1).jpg
    ("kiwi/a%2Fb.jpg", "'%2F'"),
    ("kiwi/12:30:05.jpg", "':'"),  # Hadoop refuses the path
    ("kiwi:2/a.jpg", "':'"),
    ("../../x.jpg", "'..'"),
    ("kiwi/./a.jpg", "'.'"),
    (" /a.jpg", "' '"),
    ("kiwi//a.jpg", "''"),
    ("kiwi/a\x01b.jpg", "control character"),
    ("kiwi/a\u0085b.jpg", "control character"),
])
def test_unsafe_names_are_named(relative, verdict):
    reason = unsafe_name_reason("s3://bucket/raw", f"s3://bucket/raw/{relative}")
    assert reason is None if verdict is None else verdict in reason


def test_hostile_uploads_are_processed_literally_or_rejected_with_a_reason(tmp_path):
    raw = tmp_path / "lake" / "raw"
    image = write_generated_images(raw, per_label=1, labels=("kiwi",))[0].read_bytes()
    names = {"blank label": Path(" ", "a.jpg"), "control": Path("kiwi", "a\x01b.jpg"),
             "nfc": Path("kiwi", unicodedata.normalize("NFC", "café.jpg")),
             "nfd": Path("kiwi", unicodedata.normalize("NFD", "café.jpg")),
             "percent": Path("kiwi", "50%off.jpg"), "escape-like": Path("kiwi", "50%41.jpg"),
             "colon": Path("kiwi", "12:30.jpg")}
    for relative in names.values():
        (raw / relative).parent.mkdir(parents=True, exist_ok=True)
        (raw / relative).write_bytes(image)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    before = sorted(raw.rglob("*"))

    run_key = run_key_for("manual", "../../reports/évil run", None)
    result = validate_uploads(lake, run_key, full_refresh=False, conn_id=None, max_image_bytes=10**6,
                              min_image_side=32)
    write_manifests(lake, result, None)

    rejected = {row["path"]: row for row in result.rejected}
    uri = {name: f"{lake.raw()}/{relative.as_posix()}" for name, relative in names.items()}
    assert {rejected[uri[name]]["reason"] for name in ("blank label", "control", "escape-like", "colon")} == {
        "unsafe_name"}
    valid = {row["path"] for row in result.valid}
    assert {uri["nfc"], uri["nfd"], uri["percent"]} <= valid, "two normalisations are two uploads, each literal"
    assert result.listed == len(result.valid) + len(result.rejected)
    assert sorted(raw.rglob("*")) == before, "nothing under raw/ is touched"
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "lake")]
    assert outside == [] and sorted(p.name for p in (tmp_path / "lake").iterdir()) == ["ledger", "manifests", "raw"]
    from fruits_pipeline import ledger

    # The ledger holds each name literally (quotes, escapes and both normalisations in its SQL and Parquet)
    hostile = set(uri.values()) & (valid | set(rejected))
    assert hostile <= set(ledger.pending_arrivals(lake, None))
    assert ledger.forget_arrivals(lake, hostile, None) == len(hostile)
    assert hostile.isdisjoint(ledger.pending_arrivals(lake, None))
    assert [p.name for p in (tmp_path / "lake" / "manifests").iterdir()] == [run_key]
