"""Which upload names the pipeline can process, and the label a path carries: one rule for
Airflow's validation and the feature job (docs/design.md, "Names")."""
from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

# Hadoop paths (every Spark file read, on S3 as on local disks) cannot hold every key literally.
_ESCAPE_LIKE = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def hadoop_name_problem(uri: str) -> str | None:
    """Why Spark cannot read the object at ``uri`` (a canonical URI: its key, decoded) under that
    name, or None:

    - a ':' in the key: Hadoop refuses the path ("Relative path in absolute URI"), and the read
      failed the whole job;
    - '%' and two hex digits: Hadoop reads them as an escaped character, so the features would be
      recorded under another name (50%41.jpg as 50A.jpg) and the upload never counted as done.
    """
    key = uri.split("://", 1)[-1]
    if ":" in key:
        return f"':' in {key!r}: Hadoop paths, which Spark reads through, refuse a colon in a name"
    escape = _ESCAPE_LIKE.search(key)
    if escape:
        return (f"{escape.group(0)!r} in {key!r}: Hadoop paths read it as the escaped character "
                f"{unquote(escape.group(0))!r}, so Spark would record another name")
    return None


def relative_key(root: str, uri: str) -> str:
    """``uri``'s key below the folder ``root`` (both canonical URIs)."""
    return uri[len(root.rstrip("/")) + 1:]


def unsafe_name_reason(root: str, uri: str) -> str | None:
    """Why an upload's key (below ``root``, e.g. raw/) cannot be processed under its literal name, or
    None. A ``.``, ``..``, empty or blank segment would be resolved or dropped by the path handling of
    Hadoop and file systems (raw/../../x.jpg read as another object); control characters break logs,
    globs and file systems; a ':' or a '%' with two hex digits Hadoop cannot read literally
    (hadoop_name_problem). Anything else (long names, any Unicode, in any normalisation, other
    punctuation, a '%' not followed by two hex digits) is processed under its literal key."""
    relative = relative_key(root, uri)
    if _CONTROL_CHARACTERS.search(relative):
        return f"control character in the name {relative!r}"
    bad = [segment for segment in relative.split("/") if segment in (".", "..") or not segment.strip()]
    if bad:
        return f"path segment {bad[0]!r} ('.', '..', empty or blank) in {relative!r}"
    return hadoop_name_problem(relative)


def label_of(raw_root: str, uri: str) -> str | None:
    """The label of a labelled image, ``raw/<label>/<file>``: the name of the folder holding the
    file (spaces kept); None for a file directly in raw/ and for any file outside raw/ (the app's
    photos under uploads/, whatever their folders are called). The feature job writes the same
    label (``fruits_spark.features.with_label`` spells this rule in Spark SQL; a test ties the two)."""
    root = raw_root.rstrip("/") + "/"
    if not uri.startswith(root):
        return None
    parent = posixpath.dirname(relative_key(raw_root, uri))
    return posixpath.basename(parent) if parent else None
