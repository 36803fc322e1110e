"""Feature job: images -> MobileNetV2 features (Parquet). See docs/design.md, "Feature job".

    spark-submit spark_jobs/extract_features.py --images URI --output URI
        [--uploads URI] [--manifest URI] [--model URI] [--batch-size N]

The photos to read (a manifest's, with the sizes validation wrote, or a listing), leaving out names
Hadoop cannot read and duplicate bytes, the one pass through the model UDF (fruits_spark.features),
then the rejects, duplicates and job result beside the features. Spark handles paths only: the Python
workers read the photos themselves (fruits_spark.photo_reader). The model is read once, here on the
driver, and broadcast (fruits_spark.feature_model); the features are written without Parquet's
dictionary encoding, which never fits continuous floats: trying it was the largest share of the
JVM's work per image. The rejects are written from the driver.
"""
from __future__ import annotations

import argparse
import json
import time

from fruits_contract.lake import DUPLICATES_FOLDER, EXTRACT_FEATURES, JOB_RESULT_FILE, REJECTS_FOLDER, canonical_uri
from fruits_contract.names import hadoop_name_problem
from fruits_spark.errors import FeatureInputError
from fruits_spark.feature_model import load_model_on_driver, model_fingerprint, model_name
from fruits_spark.features import Tally, accepted, featurize, log, make_featurize_udf
from fruits_spark.io import write_text
from fruits_spark.job_runner import run_job
from fruits_spark.photo_reader import list_photos
from fruits_spark.session import lost_executors

JOB = EXTRACT_FEATURES
DEFAULT_BATCH_SIZE = 64
# The features' leaf column in Parquet's schema (Spark writes arrays as the standard 3-level LIST).
FEATURES_PARQUET_COLUMN = "features.list.element"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MobileNetV2 features of images, written as Parquet.")
    parser.add_argument("--images", required=True,
                        help="labelled images (the lake's raw/), read recursively; label = parent folder")
    parser.add_argument("--uploads", help="the app's photos to identify (the lake's uploads/), read recursively "
                                          "too; their features have no label")
    parser.add_argument("--output", required=True, help="Parquet output (overwritten); rejects under _rejects/")
    parser.add_argument("--manifest", help="Parquet with a 'path' column: only these images are read (those "
                                           "under --images labelled by their folder, the others not)")
    parser.add_argument("--model", help="TFLite flatbuffer of MobileNetV2 1.0 224 no top, any URI Spark reads "
                                        "(default: the one the repository ships, spark_jobs/models/)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per Arrow batch: decoded together, held in memory at once")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# DataFrame transformations (each testable on a tiny frame)
# ---------------------------------------------------------------------------
def manifest_photos(spark, manifest_uri: str) -> list[tuple[str, int | None]]:
    """(path as validation spells it, size or None) of each distinct path a manifest lists: strings and
    sizes only, images are never collected. Validation's manifests carry each upload's size; a
    manifest with a ``path`` column alone is accepted, its sizes then read from the lake."""
    try:
        frame = spark.read.parquet(manifest_uri)
    except Exception as exc:
        raise FeatureInputError(f"--manifest {manifest_uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
    if "path" not in frame.columns:
        raise FeatureInputError(f"--manifest {manifest_uri}: has no 'path' column (columns: {frame.columns})")
    sized = "size" in frame.columns
    rows = frame.select("path", "size" if sized else "path").distinct().collect()
    photos = {row[0]: (int(row[1]) if sized and row[1] is not None else None) for row in rows if row[0]}
    return sorted(photos.items())


def on_the_workers(spark, uris: list[str], slots: int, read, answer) -> list:
    """What ``answer(uri, what read(uri) gave or the RejectedImage it raised)`` yields for each of
    ``uris``, run by the Python workers (partition_count partitions), reads running ahead."""
    if not uris:
        return []

    def partition_results(partition):
        from fruits_spark.photo_reader import read_ahead

        for uri, outcome in read_ahead(partition, read):
            yield from answer(uri, outcome)

    return (spark.sparkContext.parallelize(uris, partition_count(len(uris), slots))
            .mapPartitions(partition_results).collect())


def _size_or_none(uri, size):
    yield uri, (None if isinstance(size, Exception) else size)


def _sha256_if_there(uri, content):
    import hashlib

    if not isinstance(content, Exception):
        yield uri, hashlib.sha256(content).hexdigest()


def labelled_root_of(images_uri: str) -> str:
    """``--images`` spelt as the paths listed or given are (file:///..., s3://... for s3a and s3n too)."""
    root = canonical_uri(images_uri)
    return "s3://" + root.split("://", 1)[1] if root.startswith(("s3a://", "s3n://")) else root


def listed_photos(images_uri: str, uploads_uri: str | None = None) -> list[tuple[str, int]]:
    """(path, size) of every photo under ``--images`` and ``--uploads``, or FeatureInputError naming
    the flag whose folder cannot be listed."""
    photos = []
    for flag, uri in (("--images", images_uri), ("--uploads", uploads_uri)):
        if uri:
            try:
                photos += list_photos(uri)
            except (FileNotFoundError, ValueError) as exc:
                raise FeatureInputError(f"{flag} {exc}") from None
    return sorted(photos)


def photo_sizes(spark, uris: list[str], slots: int) -> dict[str, int | None]:
    """The size of each of ``uris`` (None: gone), read by the Python workers (a HEAD or a stat each)."""
    from fruits_spark.photo_reader import photo_size

    return dict(on_the_workers(spark, uris, slots, photo_size, _size_or_none))


def photo_hashes(spark, uris: list[str], slots: int) -> list[tuple[str, str]]:
    """(uri, sha256 of its bytes) of each of ``uris`` still there, read and hashed by the Python workers."""
    from fruits_spark.photo_reader import read_photo

    return on_the_workers(spark, uris, slots, read_photo, _sha256_if_there)


def same_size_paths(sizes) -> list[str]:
    """The paths (as listed) of the non-empty files that share their size with another: the only
    ones that can be duplicates, so the only ones hashed (``sizes``: (path, length) pairs)."""
    by_size: dict[int, list[str]] = {}
    for path, length in sizes:
        if length:
            by_size.setdefault(int(length), []).append(path)
    return sorted(path for group in by_size.values() if len(group) > 1 for path in group)


def duplicates_of(hashes) -> list[tuple[str, str, str]]:
    """(path, duplicate_of, sha256) for every file whose bytes another file of the run also has; the
    one kept is the smallest canonical path of its group (``hashes``: (canonical path, sha256) pairs)."""
    by_hash: dict[str, list[str]] = {}
    for path, digest in hashes:
        by_hash.setdefault(digest, []).append(path)
    rows = []
    for digest, group in by_hash.items():
        kept, *others = sorted(group)
        rows += [(path, kept, digest) for path in others]
    return sorted(rows)


def find_duplicates(spark, photos: list[tuple[str, int]], slots: int) -> list[tuple[str, str, str]]:
    """Rows of the duplicates table for ``photos`` ((canonical path, size) pairs): only the files that
    share their size with another are read (by the Python workers) and hashed; each photo is
    featurized once per run."""
    return duplicates_of(photo_hashes(spark, same_size_paths(photos), slots))


# Partitions: one per task slot, and more (up to PARTITIONS_PER_SLOT) only when each would still
# hold MIN_PHOTOS_PER_TASK photos. A task costs about 0.3 s to start and commit (measured on
# Fruits-360: 4 partitions per slot ran at 0.89x two bare LiteRT processes, 1 per slot at 0.94x),
# and every photo costs at least the model's ~7 ms, so a task of 2,000 photos pays under 3%. More
# partitions bound what a lost worker takes with it (its running task) on the long runs where that
# matters. Balance does not need them: the photos are dealt out by size (paths_frame), so each
# partition gets the same mix of large and small, of HEIC and JPEG (the mixed phone set ran at the
# same rate with 1 and with 4 per slot). The interpreter is cached per Python worker, so a further
# task on the same worker builds nothing.
PARTITIONS_PER_SLOT = 4
MIN_PHOTOS_PER_TASK = 2000


def partition_count(photos: int, slots: int) -> int:
    """How many partitions ``photos`` photos are read in on ``slots`` task slots."""
    per_slot = min(PARTITIONS_PER_SLOT, max(1, photos // (slots * MIN_PHOTOS_PER_TASK)))
    return max(1, min(photos, slots * per_slot))


def paths_frame(spark, photos: list[tuple[str, int]], slots: int):
    """The one-column frame (path) the model UDF reads, in partition_count partitions of about
    equal bytes: the photos dealt out by size, largest first, so that no partition gets all the
    large ones."""
    partitions = partition_count(len(photos), slots)
    by_size = [path for path, _ in sorted(photos, key=lambda photo: (-(photo[1] or 0), photo[0]))]
    # parallelize cuts its list into contiguous slices: deal them so that slice i gets every
    # partitions-th photo from position i.
    dealt = [by_size[k] for start in range(partitions) for k in range(start, len(by_size), partitions)]
    return spark.createDataFrame(spark.sparkContext.parallelize([(path,) for path in dealt], partitions), "path string")


REJECTS_DDL = "path string, reason string, detail string"
DUPLICATES_DDL = "path string, duplicate_of string, sha256 string"


def rejects_table(spark, rejects: list):
    """The rejects table: path, reason, detail, one row per (path, reason, detail) given."""
    return spark.createDataFrame(sorted(rejects), REJECTS_DDL)


def split_unsafe_names(uris: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Canonical URIs -> (those with names Hadoop reads literally, rejects (uri, "unsafe_name", why)
    for the others): fruits_contract.names.hadoop_name_problem, the rule validation applies before the
    job. The job reads photos without Hadoop now; it keeps the rule so that a listing run and a
    manifest run of the same lake agree on what is featurized."""
    readable, rejects = [], []
    for uri in uris:
        why = hadoop_name_problem(uri)
        if why:
            rejects.append((uri, "unsafe_name", why))
        else:
            readable.append(uri)
    return readable, rejects


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------
def task_slots(spark) -> int:
    return max(1, spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus", "1")))


def run(spark, args: argparse.Namespace, *, model: bytes | None = None) -> dict:
    """The whole feature job on an existing session; returns the job result (the FRUITS_RESULT line).

    ``model`` lets a caller pass the bytes load_model_on_driver already read (tests).
    """
    started = time.monotonic()
    images_uri, output_uri, manifest_uri = args.images, args.output.rstrip("/"), args.manifest
    if args.batch_size < 1:
        raise FeatureInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    # Rows per Arrow batch: bounds the image bytes and pixels held per task.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    slots = task_slots(spark)

    photos = manifest_photos(spark, manifest_uri) if manifest_uri else listed_photos(images_uri, args.uploads)
    log.info("%s lists %d images", f"manifest {manifest_uri}" if manifest_uri else images_uri, len(photos))
    if model is None:
        model = load_model_on_driver(spark, args.model)
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    broadcast = spark.sparkContext.broadcast(model)
    log.info("model read on the driver (%.1f MB) and broadcast in %.1f s; %d task slots, %d LiteRT thread(s) each",
             len(model) / 1e6, time.monotonic() - started, slots, threads)

    readable, unsafe = split_unsafe_names([path for path, _ in photos])
    sizes = dict(photos)
    unsized = [path for path in readable if sizes[path] is None]
    sizes.update(photo_sizes(spark, unsized, slots))
    missing = [(path, "missing", f"{path}: no such file or object") for path in unsized if sizes[path] is None]
    photos = [(path, sizes[path]) for path in readable if sizes[path] is not None]
    duplicates = find_duplicates(spark, photos, slots)
    duplicated = {path for path, _, _ in duplicates}
    to_featurize = [(path, size) for path, size in photos if path not in duplicated]
    tally = Tally.on(spark.sparkContext)
    udf = make_featurize_udf(broadcast, model_fingerprint(model), threads, tally)
    try:
        log.info("featurizing %d files (%d duplicates left out) in %d partition(s)",
                 len(to_featurize), len(duplicates), partition_count(len(to_featurize), slots))
        # The one pass over the images: the model runs once per image, the tally counts as it goes.
        labelled_root = labelled_root_of(images_uri)
        (accepted(featurize(paths_frame(spark, to_featurize, slots), udf, labelled_root), model_name(model))
         .write.mode("overwrite")
         .option(f"parquet.enable.dictionary#{FEATURES_PARQUET_COLUMN}", "false").parquet(output_uri))
    finally:
        broadcast.destroy()
    rejects = list(tally.rejects.value) + unsafe + missing
    counts = {"featurized": int(tally.featurized.value), "rejected": len(rejects), "duplicates": len(duplicates)}
    rejects_table(spark, rejects).coalesce(1).write.mode("overwrite").parquet(f"{output_uri}/{REJECTS_FOLDER}")
    # Beside _rejects: duplicates are done (exactly-once reads their paths) though not in the features.
    (spark.createDataFrame(duplicates, DUPLICATES_DDL).coalesce(1).write.mode("overwrite")
     .parquet(f"{output_uri}/{DUPLICATES_FOLDER}"))
    result = {
        "job": JOB,
        "read": sum(counts.values()),
        **counts,
        "seconds": round(time.monotonic() - started, 3),
        "executors_lost": lost_executors(spark),  # their tasks ran again elsewhere: the run report lists them
        "s3_retried": tally.s3_retried.value,  # the workers' reads of the photos: {operation: {error: attempts}}
    }
    write_text(spark, f"{output_uri}/{JOB_RESULT_FILE}", json.dumps(result))  # last: the batch counts from here
    log.info("read %d images, featurized %d, rejected %d (see %s/%s), %d duplicates (%s) in %.1f s",
             result["read"], result["featurized"], result["rejected"], output_uri, REJECTS_FOLDER, result["duplicates"],
             DUPLICATES_FOLDER, result["seconds"])
    return result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
