"""The labels users confirmed for their photos (docs/design.md, "Two kinds of images", "The lake": ``labels/``).

The app's photos arrive under ``uploads/<any depth>/<file>`` without a label. When a user confirms
which fruit a photo shows, the app writes rows ``path, label`` as CSV or Parquet files under
``labels/`` (any number of files, appended over time; the last row for a path wins). ``path`` is the
photo's key under the lake (``uploads/2026-12-02/u1/8f3c.heic``) or its full URI
(``s3://bucket/uploads/...``, ``file:///lake/uploads/...``). The next run trains on those uploads
under their confirmed label, from the features already computed: validation resolves ``labels/``
into ``manifests/<run_key>/labels/`` (path, label), which the classifier job reads.

Each step is one function: ``read_label_files`` (the files and their rows, or why a file was not
read), ``resolve_labels`` (each row accepted or rejected, and why), ``labels_digest`` (what the next
run compares to know whether the labels changed since the current classifier) and
``write_labels_manifest``; ``confirmed_labels`` does the first two.

A file or a row that cannot be used is reported (the run report's ``labels``) and never fails the
run: labels are the users' words, not the pipeline's. An I/O error of the lake that outlived the S3
client's retries does fail the task (``storage.LakeIOError``): a file left out because S3 was
unwell for a moment would change the labels, and the classifier would be trained again on fewer.
"""
from __future__ import annotations

import hashlib
import io
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from fruits_contract.lake import MANIFEST_LABELS_COLUMNS, Lake, canonical_uri
from fruits_contract.names import unsafe_name_reason
from fruits_pipeline import storage
from fruits_pipeline.validation import count_by

log = logging.getLogger(__name__)

MANIFEST_FILE = "part-00000.parquet"  # as validation's manifests
LABEL_FILE_SUFFIXES = (".csv", ".parquet")  # compared in lower case: Labels.CSV is read too
PATH_COLUMN, LABEL_COLUMN = "path", "label"
MAX_LABEL_BYTES = 255  # a file or folder name's limit on every common file system (and the limit of raw/<label>/)
REJECTED_EXAMPLES_PER_REASON = 3  # in the run report; the logs name every rejected row

# Rejection reasons of a row, and of a file.
NOT_AN_UPLOAD, UNKNOWN_PATH, REJECTED_UPLOAD, EMPTY_LABEL, UNSAFE_LABEL, LABEL_TOO_LONG = (
    "not_an_upload", "unknown_path", "rejected_upload", "empty_label", "unsafe_label", "label_too_long")
NOT_CSV_OR_PARQUET, UNREADABLE, MISSING_COLUMNS = "not_csv_or_parquet", "unreadable", "missing_columns"


@dataclass(frozen=True)
class LabelRow:
    """One row of a label file, as written. ``file``: the file's canonical URI; ``row``: 1-based number
    of the row of data (a CSV's header is not counted: row 1 is its second line); ``path`` and
    ``label``: the values as written (None for a Parquet null)."""

    file: str
    row: int
    path: str | None
    label: str | None


@dataclass
class ConfirmedLabels:
    """The users' labels resolved. ``accepted``: canonical URI of an upload -> its label, sorted by path;
    ``rejected``: one dict per row not used (file, row, path, label, reason, detail); ``files``: label
    files read; ``rows``: their rows; ``superseded``: valid rows replaced by a later valid row of the
    same photo; ``file_problems``: the files not read (file, reason, detail)."""

    accepted: dict[str, str] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    superseded: int = 0
    file_problems: list[dict] = field(default_factory=list)

    def rejected_by_reason(self) -> dict[str, int]:
        return count_by(self.rejected, "reason")

    def rejected_examples(self, per_reason: int = REJECTED_EXAMPLES_PER_REASON) -> dict[str, list[dict]]:
        """The first few rejected rows of each reason (file, row, path, label, reason, detail)."""
        examples: dict[str, list[dict]] = {}
        for row in self.rejected:
            rows = examples.setdefault(row["reason"], [])
            if len(rows) < per_reason:
                rows.append(dict(row))
        return dict(sorted(examples.items()))

    def digest(self) -> str:
        return labels_digest(self.accepted)

    def summary(self) -> dict:
        """The run report's ``labels`` (run_report_view._labels shows it; run_plan compares ``digest``)."""
        return {"files": self.files, "rows": self.rows, "accepted": len(self.accepted),
                "rejected": len(self.rejected), "superseded": self.superseded,
                "rejected_by_reason": self.rejected_by_reason(), "rejected_examples": self.rejected_examples(),
                "file_problems": [dict(problem) for problem in self.file_problems], "digest": self.digest()}


# Reading labels/

def _is_hidden(root: str, uri: str) -> bool:
    """A name below labels/ starting with '.' or '_' (in any folder): a file being written (storage's
    ``.writing-*``, an editor's ``.~lock``), a checksum (``.crc``) or a writer's marker (``_SUCCESS``),
    not rows; the rule of Spark's readers (storage.is_parquet_data_file)."""
    return any(part.startswith((".", "_")) for part in uri[len(root.rstrip("/")) + 1:].split("/"))


def modified_at(info: dict) -> float:
    """When a listed object was last written, in seconds since the epoch, from its file system's info:
    ``mtime`` on file://, ``LastModified`` on S3 (s3fs); 0 when the listing gives none."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def label_files(lake: Lake, conn_id: str | None) -> list[str]:
    """The files under ``labels/`` (hidden names left out), in the order they were written: by
    last-modified time, then by URI for files written in the same instant (S3 gives whole seconds):
    the order in which "the last row for a path wins"."""
    root = lake.labels_root()
    listed = storage.list_file_info(root, conn_id)
    return [uri for uri, _ in sorted(((uri, modified_at(info)) for uri, info in listed.items()
                                      if not _is_hidden(root, uri)), key=lambda item: (item[1], item[0]))]


def _problem(uri: str, reason: str, detail: str) -> dict:
    return {"file": uri, "reason": reason, "detail": detail}


def _is_text(arrow_type) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or \
        getattr(pa.types, "is_string_view", lambda _: False)(arrow_type)


def _table_of(uri: str, data: bytes):
    """The file's path and label columns as an Arrow table, or raises ValueError(reason, detail)."""
    import pyarrow as pa

    kind = "CSV" if uri.lower().endswith(".csv") else "Parquet"
    try:
        if kind == "CSV":
            import pyarrow.csv as pc

            # Both columns as text, whatever they look like (a label "007" stays "007"; an empty one is
            # "", not null); a quoted value may hold a newline (then rejected as unsafe, not the file).
            table = pc.read_csv(io.BytesIO(data), parse_options=pc.ParseOptions(newlines_in_values=True),
                                convert_options=pc.ConvertOptions(
                                    column_types={PATH_COLUMN: pa.string(), LABEL_COLUMN: pa.string()}),
                                read_options=pc.ReadOptions(use_threads=False))
            names = table.column_names
        else:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(io.BytesIO(data))
            names = parquet.schema_arrow.names
            table = None
    except (pa.ArrowException, OSError, ValueError) as error:  # pyarrow's parse errors are ArrowInvalid (ValueError)
        raise ValueError(UNREADABLE, f"{uri} cannot be read as {kind}: {error}") from None
    missing = [name for name in (PATH_COLUMN, LABEL_COLUMN) if name not in names]
    if missing:
        raise ValueError(MISSING_COLUMNS, f"{uri} has no column {' nor '.join(repr(name) for name in missing)} "
                                          f"(columns found: {names}); label files hold the columns path and label")
    twice = [name for name in (PATH_COLUMN, LABEL_COLUMN) if names.count(name) > 1]
    if twice:
        raise ValueError(UNREADABLE, f"{uri} has {len(names)} columns and {twice[0]!r} twice: which one to read "
                                     "is not said")
    try:
        if table is None:
            table = parquet.read(columns=[PATH_COLUMN, LABEL_COLUMN])
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ValueError(UNREADABLE, f"{uri} cannot be read as {kind}: {error}") from None
    for name in (PATH_COLUMN, LABEL_COLUMN):
        if not _is_text(table.schema.field(name).type):
            raise ValueError(UNREADABLE, f"{uri}: column {name!r} holds {table.schema.field(name).type}, not text")
    return table


def parse_label_file(uri: str, data: bytes) -> tuple[list[LabelRow], dict | None]:
    """The rows of one label file, or ([], its problem): ``not_csv_or_parquet`` (by its name's
    suffix), ``unreadable`` (not parsed, or path/label not text) or ``missing_columns``."""
    if not uri.lower().endswith(LABEL_FILE_SUFFIXES):
        return [], _problem(uri, NOT_CSV_OR_PARQUET,
                            f"{uri} is not read: only .csv and .parquet files under labels/ hold labels")
    try:
        table = _table_of(uri, data)
    except ValueError as error:
        reason, detail = error.args
        return [], _problem(uri, reason, detail)
    paths, labels = table.column(PATH_COLUMN).to_pylist(), table.column(LABEL_COLUMN).to_pylist()
    return [LabelRow(uri, number, path, label) for number, (path, label) in enumerate(zip(paths, labels), start=1)], None


def read_label_files(lake: Lake, conn_id: str | None, max_workers: int = 4) -> tuple[list[LabelRow], list[dict]]:
    """(rows, file problems) of every file under ``labels/`` (hidden names left out: ``_is_hidden``).

    The rows come file by file in the order the files were written: by last-modified time, then by
    URI for files of the same instant (S3 gives whole seconds: an app writing several files a second
    names them in order, e.g. by a timestamp), and within a file in its order; so "the last row for a
    path wins" means the latest write. CSV files have a header (``path,label``; other columns are
    ignored), Parquet files the columns path and label. A file that is not .csv/.parquet, cannot be
    parsed or lacks a column is one file problem (file, reason, detail) and the others are read all the
    same. A file removed between the listing and its reading is left out (``unreadable``)."""
    rows, problems, _ = _read_label_files(lake, conn_id, max_workers)
    return rows, problems


def _read_label_files(lake: Lake, conn_id: str | None, max_workers: int = 4) -> tuple[list[LabelRow], list[dict], int]:
    """read_label_files's rows and problems, and the number of files read (a file of no rows counts)."""
    uris = label_files(lake, conn_id)

    def parse(uri: str) -> tuple[list[LabelRow], dict | None]:
        if not uri.lower().endswith(LABEL_FILE_SUFFIXES):
            return parse_label_file(uri, b"")  # not read: its name says it is no label file
        try:
            data = storage.read_bytes(uri, conn_id)
        except FileNotFoundError:
            return [], _problem(uri, UNREADABLE, f"{uri} was listed, then gone before it was read")
        return parse_label_file(uri, data)

    rows: list[LabelRow] = []
    problems: list[dict] = []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="labels") as pool:
        for file_rows, problem in pool.map(parse, uris):  # map keeps the order of writing
            rows += file_rows
            if problem:
                problems.append(problem)
    return rows, problems, len(uris) - len(problems)


# Resolving the rows

def _has_scheme(path: str) -> bool:
    """``s3://...``, ``file:/...``: a scheme before any '/' (a key such as ``uploads/a:b.jpg`` has none)."""
    head = path.split("/", 1)[0]
    return head.endswith(":") and len(head) > 1 and head[0].isalpha()


def upload_uri(lake: Lake, path: str) -> str:
    """The canonical URI a row's path names: a key under the lake, taken literally (``uploads/a.jpg`` ->
    ``lake.uri("uploads/a.jpg")``), or a full URI (or an absolute local path), spelt canonically
    (``canonical_uri``: ``file:/x`` -> ``file:///x``, percent-escapes decoded)."""
    if _has_scheme(path) or path.startswith("/"):
        return canonical_uri(path)
    return lake.uri(path)


def label_problem(label: str | None) -> tuple[str, str] | None:
    """(reason, why) when ``label`` cannot be a label, else None. A confirmed label names a class as
    a raw/<label>/ folder does (the classifier learns both as one class: "Apple" of the app is
    raw/Apple/), so it must be a name a folder could hold, literally:

    - ``empty_label``: None, empty or blank: no fruit named;
    - ``unsafe_label``: '/' (a folder separator: raw/a/b/ is folder b in folder a) or '\\' (the
      separator on Windows, where the lake is copied and browsed); a leading or trailing space (file
      systems and tools drop it, so "Apple " would not stay apart from, or equal to, "Apple"); and
      names.py's rules for a name's segment: control characters (break logs, globs and file systems),
      '.' and '..' (resolved as the folder itself or its parent), ':' and '%' with two hex digits
      (Hadoop paths, which Spark reads through, refuse the first and decode the second);
    - ``label_too_long``: more than 255 bytes in UTF-8, a folder name's limit."""
    if label is None or not label.strip():
        return EMPTY_LABEL, "no label: empty or blank"
    for character, why in (("/", "'/' separates folders"),
                           ("\\", "'\\' separates folders on Windows")):
        if character in label:
            return UNSAFE_LABEL, f"{why}: a label must be one folder's name"
    if label != label.strip():
        return UNSAFE_LABEL, ("a leading or trailing space, which file systems and tools drop: the label would "
                              "not stay itself")
    # One segment (no '/', not blank): names.py's rules, on the label as a folder below raw/.
    reason = unsafe_name_reason("raw", f"raw/{label}")
    if reason:
        return UNSAFE_LABEL, reason
    size = len(label.encode("utf-8", "surrogatepass"))
    if size > MAX_LABEL_BYTES:
        return LABEL_TOO_LONG, f"{size} bytes in UTF-8, more than the {MAX_LABEL_BYTES} a folder's name may have"
    return None


def _path_problem(lake: Lake, path: str | None, uploads: set[str],
                  rejected: set[str]) -> tuple[str | None, str | None, str | None]:
    """(canonical URI, None, None) of a row's path naming an upload, else (URI or None, reason, why)."""
    if path is None or not path.strip():
        return None, NOT_AN_UPLOAD, "no path: the photo's key under the lake (uploads/...) or its URI was expected"
    uri = upload_uri(lake, path)
    raw, uploads_root = lake.raw() + "/", lake.uploads() + "/"
    if uri.startswith(raw):
        return uri, NOT_AN_UPLOAD, "a labelled image under raw/: it takes its folder's label"
    if not uri.startswith(uploads_root):
        return uri, NOT_AN_UPLOAD, f"{uri} is not under this lake's uploads/ ({uploads_root})"
    if uri not in uploads:
        return uri, UNKNOWN_PATH, f"no photo {uri} under uploads/: never uploaded, or erased"
    if uri in rejected:
        return uri, REJECTED_UPLOAD, (f"{uri} was rejected (the run reports' rejected uploads say why): it has no "
                                      "features to train on")
    return uri, None, None


def resolve_labels(rows: Iterable[LabelRow], lake: Lake, uploads: Iterable[str], *, rejected: Iterable[str] = (),
                   files: int | None = None, file_problems: list[dict] | None = None) -> ConfirmedLabels:
    """Each row accepted or rejected. ``uploads``: the canonical URIs of the photos under uploads/ that
    exist (validation's listing: ``ValidationResult.uploads``); ``rows`` in the order of writing
    (``read_label_files``). A row's path is turned into a canonical URI (``upload_uri``); it must name
    one of ``uploads`` (``not_an_upload``: a raw/ image, which takes its folder's label, or anything
    outside this lake's uploads/; ``unknown_path``: no such photo), not one of ``rejected``
    (``rejected_upload``: validation or the feature job set it aside) and its label must be a label
    (``label_problem``: ``empty_label``, ``unsafe_label``, ``label_too_long``); the path is checked first.

    Of the valid rows, the last for a path wins (the key and the full URI of a photo are one path). A
    rejected row changes nothing: a later invalid row for a path does not erase the label an earlier
    valid row gave it (a user's slip, say a blank label, does not undo a confirmation; its detail says
    which label stands). ``files``: the number of label files read (default: those the rows come from,
    which misses files of no rows); ``file_problems``: read_label_files's, carried into the summary."""
    uploads, set_aside = set(uploads), set(rejected)
    accepted: dict[str, str] = {}
    accepted_at: dict[str, LabelRow] = {}
    rejected: list[dict] = []
    superseded = 0
    rows = list(rows)
    for row in rows:
        uri, reason, why = _path_problem(lake, row.path, uploads, set_aside)
        if reason is None:
            problem = label_problem(row.label)
            if problem:
                reason, why = problem
        where = f"{row.file} row {row.row}: path {row.path!r} labelled {row.label!r}"
        if reason is None:
            superseded += uri in accepted
            accepted[uri] = row.label
            accepted_at[uri] = row
            continue
        detail = f"{where}: {why}"
        if uri in accepted:
            earlier = accepted_at[uri]
            detail += f"; the label {accepted[uri]!r} of {earlier.file} row {earlier.row} stands"
        rejected.append({"file": row.file, "row": row.row, "path": row.path, "label": row.label,
                         "reason": reason, "detail": detail})
    return ConfirmedLabels(accepted=dict(sorted(accepted.items())), rejected=rejected,
                           files=len({row.file for row in rows}) if files is None else files, rows=len(rows),
                           superseded=superseded, file_problems=list(file_problems or []))


def labels_digest(accepted: dict[str, str]) -> str:
    """sha256 (hex) of the sorted ``path\\tlabel\\n`` lines of the accepted labels: the same labels give
    the same digest in any order; the run report keeps it, and the next run compares it with the one
    the current classifier was trained with to know whether the labels changed (run_plan.decide_route).
    No label holds a tab or a newline (control characters are unsafe_label)."""
    lines = sorted(f"{path}\t{label}\n" for path, label in accepted.items())
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


def write_labels_manifest(lake: Lake, run_key: str, accepted: dict[str, str], conn_id: str | None) -> str:
    """Write (replace) ``manifests/<run_key>/labels/``: one Parquet file of the accepted labels (columns
    MANIFEST_LABELS_COLUMNS, sorted by path; an empty table when none), as validation writes its
    manifests; returns the folder's URI (what train_classifier reads as ``--labels``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = lake.manifest_labels(run_key)
    schema = pa.schema([(name, getattr(pa, arrow_type)()) for name, arrow_type in MANIFEST_LABELS_COLUMNS])
    table = pa.Table.from_pylist([{"path": path, "label": label} for path, label in sorted(accepted.items())],
                                 schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.remove_tree(uri, conn_id, inputs=lake.inputs())  # a rerun replaces its own manifest
    storage.write_bytes(f"{uri}/{MANIFEST_FILE}", sink.getvalue(), conn_id)
    return uri


def confirmed_labels(lake: Lake, conn_id: str | None, known_uploads) -> ConfirmedLabels:
    """``labels/`` read and resolved against the photos it names: ``known_uploads(uris) -> (uploads,
    rejected)`` says which of these URIs are photos under uploads/ and which of those were set aside
    (validation.known_uploads: a lookup in the ledger)."""
    rows, problems, files = _read_label_files(lake, conn_id)
    named = {upload_uri(lake, row.path) for row in rows if row.path is not None and row.path.strip()}
    uploads, rejected = known_uploads(named)
    result = resolve_labels(rows, lake, uploads, rejected=rejected, files=files, file_problems=problems)
    for problem in problems:
        log.warning("label file not read (%s): %s", problem["reason"], problem["detail"])
    for row in result.rejected:
        log.warning("label row rejected (%s): %s", row["reason"], row["detail"])
    log.info("confirmed labels: %d accepted from %d row(s) of %d file(s) under %s (%d rejected, %d superseded by a "
             "later row, %d file(s) not read); digest %s", len(result.accepted), result.rows, result.files,
             lake.labels_root(), len(result.rejected), result.superseded, len(problems), result.digest())
    return result
