"""Superseded copies of a job's output thinned out: each run writes a new pca/<run_key>/ (every image's
PCA features) and classifier/<run_key>/held_out/ (a fifth of them), and nothing removed them.

A run's folder is kept whole when it is the published one (its pointer names it), this run's, or among
the COPIES_KEPT newest finished ones (their job result written): a rollback to one of the last few days
stays possible. Of the others, the entries ``drops`` names go. Only folders holding ``marker`` (a file
their job always writes) are taken for copies, whatever else shares the parent folder.
"""
from __future__ import annotations

from fruits_contract.lake import COPIES_KEPT, JOB_RESULT_FILE, join_uri


def superseded_copies(copies: dict[str, int | None], keep: set[str], newest: int = COPIES_KEPT) -> list[str]:
    """The folders of ``copies`` (folder -> when its job result was written, None: not finished) to thin out:
    not in ``keep``, not among the ``newest`` finished ones, and not unfinished (another attempt may be
    writing it)."""
    finished = sorted((uri for uri, at in copies.items() if at is not None), key=lambda uri: (copies[uri], uri))
    kept = {uri.rstrip("/") for uri in keep}
    return [uri for uri in finished[:-newest] if uri.rstrip("/") not in kept]


def thin_superseded(spark, output: str, published: str | None, *, marker: str, drops, what: str, logger) -> list[str]:
    """Remove the entries ``drops(name)`` of the superseded copies beside ``output``; returns the folders thinned."""
    from fruits_spark.io import delete_entries, exists, list_folders, modified_ms

    root = output.rstrip("/").rsplit("/", 1)[0]
    copies = {uri: modified_ms(spark, join_uri(uri, JOB_RESULT_FILE)) for uri in list_folders(spark, root)
              if exists(spark, join_uri(uri, marker))}
    thinned = [uri for uri in superseded_copies(copies, {output, *([published] if published else [])})
               if delete_entries(spark, uri, drops)]
    if thinned:
        logger.info("thinned %d superseded %s (kept whole: the published one, this run's and the newest %d): %s",
                    len(thinned), what, COPIES_KEPT, ", ".join(thinned))
    return thinned
