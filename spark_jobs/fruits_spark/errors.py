"""Input a job cannot use: what the job runner (fruits_spark.job_runner) logs and exits 2 for.

Raised for what the caller gave (a flag, a folder, a file), with a message naming it and what is
wrong; a fault of the code or the cluster keeps its own exception and traceback.
"""
from __future__ import annotations


class JobInputError(ValueError):
    """A job's input cannot be used; the message names the flag, the URI and what is wrong."""


class FeatureInputError(JobInputError):
    """The feature job's --manifest, --model or --batch-size cannot be used."""


class PcaInputError(JobInputError):
    """The features cannot be reduced; the message names the input and what is wrong."""


class ClassifierInputError(JobInputError):
    """The PCA output cannot be trained on; the message names the input and what is wrong."""
