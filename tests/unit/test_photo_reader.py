"""fruits_spark.photo_reader.read_ahead: S3 reads run ahead of the decode, in order, a few at a time."""
from __future__ import annotations

import threading
import time

import pytest

from fruits_contract.headers import RejectedImage
from fruits_spark import photo_reader


class RecordingRead:
    """A read that takes a while, and notes how many reads ran at once and in which threads."""

    def __init__(self, seconds: float = 0.02):
        self.seconds, self.lock = seconds, threading.Lock()
        self.running = self.most_at_once = 0
        self.threads: dict[str, str] = {}

    def __call__(self, uri: str) -> bytes:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads[uri] = threading.current_thread().name
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        if uri.endswith("gone.jpg"):
            raise RejectedImage("missing", f"{uri}: no such object")
        if uri.endswith("broken.jpg"):
            raise OSError(f"{uri}: connection reset")
        return uri.encode()


def test_s3_reads_overlap_a_few_at_a_time_and_come_back_in_order():
    uris = [f"s3://lake/raw/kiwi/{index:02d}.jpg" for index in range(20)]
    read = RecordingRead()
    seen = []
    for uri, content in photo_reader.read_ahead(uris, read, window=3):
        seen.append((uri, content))
        time.sleep(0.01)  # the decode: the next reads go on meanwhile
    assert seen == [(uri, uri.encode()) for uri in uris]
    assert 1 < read.most_at_once <= 3 + 1  # the one the consumer waits for, and three ahead
    assert all(name.startswith("photo-read") for name in read.threads.values())


def test_local_files_are_read_in_the_consumers_thread_when_their_turn_comes():
    uris = [f"file:///lake/raw/kiwi/{index}.jpg" for index in range(5)] + ["s3://lake/raw/kiwi/9.jpg"]
    read = RecordingRead(seconds=0)
    assert [uri for uri, _ in photo_reader.read_ahead(uris, read)] == uris
    consumer = threading.current_thread().name
    assert [read.threads[uri] == consumer for uri in uris] == [True] * 5 + [False]


def test_a_missing_photo_is_an_answer_and_any_other_failure_is_raised_at_its_turn():
    uris = ["s3://lake/raw/a.jpg", "s3://lake/raw/gone.jpg", "s3://lake/raw/b.jpg", "s3://lake/raw/broken.jpg",
            "s3://lake/raw/c.jpg"]
    reads = photo_reader.read_ahead(uris, RecordingRead(seconds=0), window=4)
    assert next(reads) == (uris[0], uris[0].encode())
    uri, outcome = next(reads)
    assert uri == uris[1] and isinstance(outcome, RejectedImage) and outcome.reason == "missing"
    assert next(reads) == (uris[2], uris[2].encode())
    with pytest.raises(OSError, match="broken.jpg: connection reset"):
        next(reads)


def test_an_unknown_scheme_is_named():
    with pytest.raises(ValueError, match=r"hdfs://lake/raw/a.jpg: .*s3:// or file:// only"):
        photo_reader.read_photo("hdfs://lake/raw/a.jpg")
