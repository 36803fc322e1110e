"""make demo's driver: what it copies, what it refuses and how it says so (no Airflow started here;
tests/e2e runs the DAG itself)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fruits_pipeline import demo
from fruits_pipeline.settings import REPO_ROOT


def _jpeg(path: Path, content: bytes = b"\xff\xd8\xff jpeg bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_fruits360_layout_lands_under_label_folders_without_collisions(tmp_path):
    images = tmp_path / "fruits-360"
    _jpeg(images / "Training" / "Apple Red 1" / "r_1_100.jpg", b"train")
    _jpeg(images / "Test" / "Apple Red 1" / "r_1_100.jpg", b"test")
    _jpeg(images / "Test" / "Kiwi" / "2_100.JPG")
    (images / "Test" / "Kiwi" / "notes.txt").write_text("not an image")
    _jpeg(images / ".hidden" / "x.jpg")
    raw = tmp_path / "lake" / "raw"

    result = demo.copy_new_images(images, raw)

    assert result == demo.CopyResult(copied=3, already_there=0)
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file()) == [
        "Apple Red 1/Test__r_1_100.jpg", "Apple Red 1/Training__r_1_100.jpg", "Kiwi/Test__2_100.JPG"]
    assert (raw / "Apple Red 1" / "Training__r_1_100.jpg").read_bytes() == b"train"


def test_second_copy_adds_only_new_images_and_never_overwrites(tmp_path, capsys):
    images, raw = tmp_path / "images", tmp_path / "raw"
    _jpeg(images / "banana" / "a.jpg", b"a")
    _jpeg(images / "banana" / "b.jpg", b"b")
    assert demo.copy_new_images(images, raw) == demo.CopyResult(2, 0)
    assert demo.copy_new_images(images, raw) == demo.CopyResult(0, 2)

    _jpeg(images / "banana" / "c.jpg", b"c")
    (images / "banana" / "a.jpg").write_bytes(b"changed")
    assert demo.copy_new_images(images, raw) == demo.CopyResult(1, 2)
    assert (raw / "banana" / "a.jpg").read_bytes() == b"a", "an upload in raw/ is never modified"
    assert "already exists with other content" in capsys.readouterr().out


def test_an_image_outside_a_label_folder_is_refused(tmp_path):
    _jpeg(tmp_path / "images" / "loose.jpg")
    with pytest.raises(demo.DemoError, match="not in a label folder"):
        demo.copy_new_images(tmp_path / "images", tmp_path / "raw")


def _run_demo(args: list[str], env_overrides: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FRUITS_SAMPLE_DIR", "FRUITS_WEIGHTS")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "fruits_pipeline.demo", "--lake", str(tmp_path / "lake"),
                           "--airflow-home", str(tmp_path / "airflow"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)


@pytest.mark.parametrize("images_arg, detail", [
    ([], "IMAGES= is not set"),
    (["--images", "/nonexistent/fruits"], "is not a folder"),
    (["--images", "{empty}"], "holds no .jpg"),
])
def test_without_images_it_stops_at_once_and_says_how_to_get_fruits360(tmp_path, images_arg, detail):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in images_arg]
    result = _run_demo(args, {}, tmp_path)
    assert result.returncode == 2
    assert detail in result.stderr
    assert "Fruits-360" in result.stderr and "make demo IMAGES=" in result.stderr
    assert not (tmp_path / "airflow").exists(), "Airflow must not start without images"
    assert not (tmp_path / "lake").exists()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{demo.IMAGENET_WEIGHTS_FILE}"


def test_without_network_and_weights_it_says_how_to_give_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(demo.DemoError) as raised:
        demo.ensure_weights(None, url=_closed_port_url(), timeout=3)
    message = str(raised.value)
    assert "could not be downloaded" in message
    assert "FRUITS_WEIGHTS=/path/to/mobilenet_v2_1.0_224_no_top.weights.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert not list((tmp_path / "keras" / "models").glob("*")), "no partial download is left behind"


def test_weights_come_from_the_given_file_or_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    given = _jpeg(tmp_path / "w.weights.h5", b"h5")
    assert demo.ensure_weights(str(given)) == given
    with pytest.raises(demo.DemoError, match="is not a file"):
        demo.ensure_weights(str(tmp_path / "missing.weights.h5"))
    cached = _jpeg(tmp_path / "keras" / "models" / demo.IMAGENET_WEIGHTS_FILE, b"cached")
    assert demo.ensure_weights(None, url=_closed_port_url(), timeout=3) == cached


def test_airflow_runs_on_a_throwaway_sqlite_home_in_local_mode(tmp_path):
    env = demo.airflow_env(tmp_path / "lake", tmp_path / "home", weights=None)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["FRUITS_COMPUTE"] == "local"
    assert env["FRUITS_LAKE_URI"] == f"file://{tmp_path / 'lake'}"
    assert "FRUITS_WEIGHTS" not in env


def test_the_newest_report_is_the_one_the_run_wrote(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    old = reports / "old.json"
    old.write_text("{}")
    before = demo.reports(tmp_path)
    assert demo.newest_report(tmp_path, before) is None
    new = reports / "manual__2026-11-22T04-50-00.json"
    new.write_text(json.dumps({}))
    assert demo.newest_report(tmp_path, before) == new
