"""Feature job: images -> MobileNetV2 features (Parquet). See docs/design.md, "Feature job".

    spark-submit spark_jobs/extract_features.py --images URI --output URI
        [--manifest URI] [--model URI] [--batch-size N]

Reading the images (a listing or a manifest's files), leaving out names Hadoop cannot read and
duplicate bytes, the one pass through the model UDF (fruits_spark.features), then the rejects,
duplicates and job result beside the features. The model is read once, here on the driver, and
broadcast (fruits_spark.feature_model); the features are written without Parquet's dictionary
encoding, which never fits continuous floats: trying it was the largest share of the JVM's work per
image. The rejects are written from the driver; empty files are looked for only when the counts say
some listed file is missing.
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
from fruits_spark.session import lost_executors

JOB = EXTRACT_FEATURES
DEFAULT_BATCH_SIZE = 64
# The features' leaf column in Parquet's schema (Spark writes arrays as the standard 3-level LIST).
FEATURES_PARQUET_COLUMN = "features.list.element"
_HADOOP_GLOB_CHARS = "\\{}[]*?"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MobileNetV2 features of images, written as Parquet.")
    parser.add_argument("--images", required=True, help="folder or prefix read recursively; label = parent folder")
    parser.add_argument("--output", required=True, help="Parquet output (overwritten); rejects under _rejects/")
    parser.add_argument("--manifest", help="Parquet with a 'path' column: only these images are read")
    parser.add_argument("--model", help="TFLite flatbuffer of MobileNetV2 1.0 224 no top, any URI Spark reads "
                                        "(default: the one the repository ships, spark_jobs/models/)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per Arrow batch: decoded together, held in memory at once")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# DataFrame transformations (each testable on a tiny frame)
# ---------------------------------------------------------------------------
def escape_hadoop_glob(uri: str) -> str:
    """A literal file name for Spark's path loader, which treats {}[]*?\\ as glob syntax."""
    return "".join("\\" + ch if ch in _HADOOP_GLOB_CHARS else ch for ch in uri)


def manifest_paths(spark, manifest_uri: str) -> list[str]:
    """Distinct canonical paths listed in a manifest (strings only; images are never collected)."""
    try:
        frame = spark.read.parquet(manifest_uri)
    except Exception as exc:
        raise FeatureInputError(f"--manifest {manifest_uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
    if "path" not in frame.columns:
        raise FeatureInputError(f"--manifest {manifest_uri}: has no 'path' column (columns: {frame.columns})")
    return sorted({row.path for row in frame.select("path").distinct().collect() if row.path})


def read_images(spark, images_uri: str | None, paths: list[str] | None = None):
    """path (as Spark lists it), length, content of the files; featurize makes the path canonical.

    Every file is read, whatever its name: formats are recognised by content (fruits_spark.images),
    and what is not an accepted image is rejected with a reason, never left out of the listing.
    With ``paths`` (a manifest) exactly those files are read, never a listing of the whole
    tree (raw/ only grows). Without, ``images_uri`` is listed recursively.
    """

    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    if paths is None:
        raw = reader.load(images_uri)
    elif not paths:
        raw = spark.createDataFrame([], "path string, length long, content binary")
    else:
        raw = reader.load([escape_hadoop_glob(p) for p in paths])
    return raw.select("path", "length", "content")


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


def find_duplicates(spark, images) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(paths as listed, rows of the duplicates table) of the files of ``images`` whose bytes another
    file already has. Reads the files' sizes (a listing, no content), then hashes only the files that
    share a size, by reading those again: each photo is featurized once per run."""
    from pyspark.sql import functions as F

    candidates = same_size_paths((row.path, row.length) for row in images.select("path", "length").collect())
    if not candidates:
        return [], []
    hashed = read_images(spark, None, candidates).select("path", F.sha2("content", 256).alias("sha256")).collect()
    listed_as = {canonical_uri(row.path): row.path for row in hashed}
    rows = duplicates_of((canonical_uri(row.path), row.sha256) for row in hashed)
    return [listed_as[path] for path, _, _ in rows], rows



# Partitions per task slot. One per slot left the slowest partition alone at the end: phone uploads
# cost 0.04 s (a JPEG at reduced size) to 0.45 s (a 12 MP HEIC) each, and coalesce balances file
# counts, not costs (measured: one worker done after 22 s, the other after 80 s). The interpreter
# is cached per Python worker, so a further task on the same worker builds nothing.
PARTITIONS_PER_SLOT = 4


def few_partitions(frame, slots: int):
    """A few partitions per task slot (PARTITIONS_PER_SLOT): each worker builds its model once, and
    a slot that finishes early takes the next partition instead of waiting for the slowest.

    coalesce, not repartition: no shuffle of image bytes; it never adds partitions, and asking
    the frame how many it has would plan the whole query once more (seconds on a cold session).
    """
    return frame.coalesce(slots * PARTITIONS_PER_SLOT)



REJECTS_DDL = "path string, reason string, detail string"
DUPLICATES_DDL = "path string, duplicate_of string, sha256 string"


def rejects_table(spark, rejects: list):
    """The rejects table: path, reason, detail, one row per (path, reason, detail) given."""
    return spark.createDataFrame(sorted(rejects), REJECTS_DDL)


def split_unreadable(uris: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Canonical URIs -> (those Spark can read under their names, rejects (uri, "unsafe_name", why)
    for the others): fruits_contract.names.hadoop_name_problem, the rule validation applies before the job."""
    readable, rejects = [], []
    for uri in uris:
        why = hadoop_name_problem(uri)
        if why:
            rejects.append((uri, "unsafe_name", why))
        else:
            readable.append(uri)
    return readable, rejects


def empty_files(listed_paths: list[str], seen_paths) -> list[tuple[str, str, str]]:
    """Listed files that never reached the model (Spark's file scan silently skips zero-byte
    files), as rejects. ``listed_paths``: the listing Spark already made (``DataFrame.inputFiles()``);
    ``seen_paths``: the canonical paths featurized or rejected."""
    missing = {canonical_uri(p) for p in listed_paths} - set(seen_paths)
    return [(path, "empty", "zero bytes") for path in sorted(missing)]


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

    paths = manifest_paths(spark, manifest_uri) if manifest_uri else None
    if paths is not None:
        log.info("manifest %s lists %d images", manifest_uri, len(paths))
    if model is None:
        model = load_model_on_driver(spark, args.model)
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    broadcast = spark.sparkContext.broadcast(model)
    log.info("model read on the driver (%.1f MB) and broadcast in %.1f s; %d task slots, %d LiteRT thread(s) each",
             len(model) / 1e6, time.monotonic() - started, slots, threads)

    # Names Spark cannot read literally are rejected unread: reading one failed the whole job.
    if paths is not None:
        paths, unreadable = split_unreadable(paths)
    images = read_images(spark, images_uri, paths)
    listed = images.inputFiles()  # the listing Spark made: paths only, on the driver
    if paths is None:
        readable, unreadable = split_unreadable([canonical_uri(path) for path in listed])
        if unreadable:  # the others, by name
            images = read_images(spark, None, readable)
    duplicate_listed, duplicates = find_duplicates(spark, images)
    if duplicate_listed:
        from pyspark.sql import functions as F

        images = images.where(~F.col("path").isin(duplicate_listed))
    images = few_partitions(images, slots)
    tally = Tally.on(spark.sparkContext)
    udf = make_featurize_udf(broadcast, model_fingerprint(model), threads, tally)
    try:
        log.info("featurizing %d files under %s (%d duplicates left out) in at most %d partition(s)",
                 len(listed), images_uri, len(duplicates), slots * PARTITIONS_PER_SLOT)
        # The one pass over the images: the model runs once per image, the tally counts as it goes.
        (accepted(featurize(images, udf), model_name(model)).write.mode("overwrite")
         .option(f"parquet.enable.dictionary#{FEATURES_PARQUET_COLUMN}", "false").parquet(output_uri))
    finally:
        broadcast.destroy()
    rejects = list(tally.rejects.value) + unreadable
    counts = {"featurized": int(tally.featurized.value), "rejected": len(rejects), "duplicates": len(duplicates)}
    if len(listed) > sum(counts.values()):  # Spark's scan skips zero-byte files
        written = [row.path for row in spark.read.parquet(output_uri).select("path").collect()]
        empties = empty_files(listed, [*written, *(path for path, _, _ in rejects + duplicates)])
        rejects += empties
        counts["rejected"] += len(empties)
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
    }
    write_text(spark, f"{output_uri}/{JOB_RESULT_FILE}", json.dumps(result))  # last: the batch counts from here
    log.info("read %d images, featurized %d, rejected %d (see %s/%s), %d duplicates (%s) in %.1f s",
             result["read"], result["featurized"], result["rejected"], output_uri, REJECTS_FOLDER, result["duplicates"],
             DUPLICATES_FOLDER, result["seconds"])
    return result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
