"""Trigger-form params (docs/design.md, "The run plan") and their reading into one typed object.

Each param's range is written once, here: the form's JSON schema and RunParams' checks read
the same constants. The instance types offered are the rows of the price table, so that every
cluster the form can ask for has a price in the run report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fruits_contract.model import FEATURE_DIM
from fruits_pipeline.settings import DEFAULT_PRICE_TABLE

MAX_CORE_INSTANCES = 20
EMR_ONLY = "EMR runs only: this deployment runs Spark locally (FRUITS_COMPUTE=local) and ignores it. "


class ParamsError(ValueError):
    """A trigger param is out of range; the message names it."""


@lru_cache(maxsize=8)
def offered_instance_types(price_table: Path = DEFAULT_PRICE_TABLE) -> tuple[str, ...]:
    """The EC2 types the trigger form offers: every row of the price table, sorted by family then size."""
    instances = json.loads(Path(price_table).read_text()).get("instances") or {}
    if not instances:
        raise ParamsError(f"price table {price_table} lists no instance types")

    def order(name: str):
        family, _, size = name.partition(".")
        multiple = size.removesuffix("xlarge")
        return family, int(multiple) if multiple.isdigit() else (1 if size == "xlarge" else 0), size

    return tuple(sorted(instances, key=order))


INSTANCE_TYPES = offered_instance_types()  # the default price table's; a custom FRUITS_PRICE_TABLE is read per run


def param_specs(default_instance_type: str = "m5.xlarge", default_core_count: int = 2, *,
                compute: str = "emr", price_table: Path = DEFAULT_PRICE_TABLE) -> dict[str, dict]:
    """JSON-schema specs of the trigger form (title, one-line description with unit and range);
    the DAG wraps each in an airflow.sdk.Param. In local mode the cluster params say they are ignored."""
    emr_only = EMR_ONLY if compute == "local" else ""
    types = offered_instance_types(price_table)
    return {
        "full_refresh": dict(
            default=False, type="boolean", title="Reprocess every upload",
            description="Yes/no. Extract features again for every image in raw/, not only the new ones "
                        "(the slow path: use it after a model change)."),
        "pca_variance": dict(
            default=0.95, type="number", exclusiveMinimum=0, maximum=1, title="PCA: variance to keep",
            description="Fraction of the total variance the PCA keeps, 0 < v <= 1 (0.95 = 95%). "
                        "Ignored when 'PCA: number of components' is set. A new value refits the PCA "
                        "without extracting features again."),
        "pca_k": dict(
            default=None, type=["null", "integer"], minimum=1, maximum=FEATURE_DIM,
            title="PCA: number of components",
            description=f"Components to keep, a whole number 1..{FEATURE_DIM}; empty = use the variance above. "
                        "A new value refits the PCA without extracting features again."),
        "instance_type": dict(
            default=default_instance_type, type="string", enum=list(types), title="EMR instance type",
            description=emr_only + f"EC2 type of the master and core nodes, one of the {len(types)} types "
                        "of the price table (eu-west-3); the report prices the run with it."),
        "core_instance_count": dict(
            default=default_core_count, type="integer", minimum=1, maximum=MAX_CORE_INSTANCES,
            title="EMR core nodes",
            description=emr_only + f"Number of core nodes, 1..{MAX_CORE_INSTANCES}, for feature extraction; "
                        "a PCA-only run sizes its own, smaller cluster."),
        "use_spot": dict(
            default=False, type="boolean", title="EMR spot capacity",
            description=emr_only + "Yes/no. Run the core nodes on spot capacity: cheaper than on-demand, "
                        "but AWS may reclaim them mid-run."),
        "dry_run": dict(
            default=False, type="boolean", title="Dry run",
            description="Yes/no. Validate the uploads and write the manifests and the report only: "
                        "no cluster, no Spark, nothing featurized."),
    }


@dataclass(frozen=True)
class PcaTarget:
    """What the PCA is asked for: ``k`` components, or the smallest k keeping ``variance`` of the total.
    One shape everywhere: the report and the PCA pointer store ``as_dict()``, the PCA step gets ``job_args()``."""

    k: int | None = None
    variance: float | None = None

    def __post_init__(self):
        if (self.k is None) == (self.variance is None):
            raise ParamsError(f"a PCA target is k or variance, one of the two (got k={self.k!r}, "
                              f"variance={self.variance!r})")

    @classmethod
    def from_dict(cls, target: dict | None) -> "PcaTarget | None":
        if not target:
            return None
        return cls(k=int(target["k"])) if "k" in target else cls(variance=float(target["variance"]))

    def as_dict(self) -> dict:
        return {"k": int(self.k)} if self.k is not None else {"variance": float(self.variance)}

    def job_args(self) -> list[str]:
        """The PCA job's arguments (spark_jobs/reduce_pca.py)."""
        return ["--k", str(int(self.k))] if self.k is not None else ["--variance", repr(float(self.variance))]

    def __str__(self) -> str:
        """As people say it: "k=8" or "variance 0.95"."""
        return f"k={self.k}" if self.k is not None else f"variance {self.variance:g}"


@dataclass(frozen=True)
class ClusterShape:
    """The EMR cluster a run asks for (the job flow's core group, and the price in the report)."""

    instance_type: str
    core_instance_count: int
    use_spot: bool


@dataclass(frozen=True)
class RunParams:
    full_refresh: bool = False
    pca_variance: float = 0.95
    pca_k: int | None = None
    instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    use_spot: bool = False
    dry_run: bool = False

    def __post_init__(self):
        if not 0 < float(self.pca_variance) <= 1:
            raise ParamsError(f"pca_variance={self.pca_variance!r} must be in (0, 1]")
        if self.pca_k is not None and not 1 <= int(self.pca_k) <= FEATURE_DIM:
            raise ParamsError(f"pca_k={self.pca_k!r} must be between 1 and {FEATURE_DIM}")
        if not 1 <= int(self.core_instance_count) <= MAX_CORE_INSTANCES:
            raise ParamsError(f"core_instance_count={self.core_instance_count!r} must be 1..{MAX_CORE_INSTANCES}")

    def check_instance_type(self, price_table: Path = DEFAULT_PRICE_TABLE) -> "RunParams":
        types = offered_instance_types(price_table)
        if self.instance_type not in types:
            raise ParamsError(f"instance_type={self.instance_type!r} is not one of {', '.join(types)} "
                              f"(the rows of {Path(price_table).name})")
        return self

    @property
    def pca_target(self) -> PcaTarget:
        """pca_k when it is set, else pca_variance."""
        return PcaTarget(k=int(self.pca_k)) if self.pca_k is not None else PcaTarget(variance=float(self.pca_variance))

    @property
    def cluster(self) -> ClusterShape:
        """The cluster the form asks for (a PCA-only run may ask for fewer nodes: run_plan.cluster_for)."""
        return ClusterShape(self.instance_type, int(self.core_instance_count), bool(self.use_spot))

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, price_table: Path = DEFAULT_PRICE_TABLE) -> "RunParams":
        params = dict(params or {})
        known = {k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None}
        return cls(**known).check_instance_type(price_table)

