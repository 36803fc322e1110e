"""Trigger-form params (DESIGN.md "DAG") and their reading into one typed object."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# x86_64 only: tensorflow-cpu, which the bootstrap installs, has no aarch64 (Graviton) wheel.
INSTANCE_TYPES = (
    "m5.xlarge", "m5.2xlarge", "m5.4xlarge",
    "c5.xlarge", "c5.2xlarge", "c5.4xlarge",
    "r5.xlarge", "r5.2xlarge", "r5.4xlarge",
)
MAX_CORE_INSTANCES = 20


class ParamsError(ValueError):
    """A trigger param is out of range; the message names it."""


def param_specs(default_instance_type: str = "m5.xlarge", default_core_count: int = 2) -> dict[str, dict]:
    """JSON-schema specs of the trigger form; the DAG wraps each in an airflow.sdk.Param."""
    return {
        "full_refresh": dict(default=False, type="boolean",
                             description="Reprocess every upload in raw/, not only the new ones."),
        "pca_variance": dict(default=0.95, type="number", exclusiveMinimum=0, maximum=1,
                             description="Fraction of variance the PCA keeps (0 < v <= 1). Ignored when pca_k is set."),
        "pca_k": dict(default=None, type=["null", "integer"], minimum=1, maximum=1280,
                      description="Number of PCA components (1..1280); overrides pca_variance when set."),
        "instance_type": dict(default=default_instance_type, type="string", enum=list(INSTANCE_TYPES),
                              description="EC2 type of the master and core nodes of the EMR cluster."),
        "core_instance_count": dict(default=default_core_count, type="integer", minimum=1,
                                    maximum=MAX_CORE_INSTANCES, description="Number of core nodes."),
        "use_spot": dict(default=False, type="boolean",
                         description="Run the core nodes on spot capacity (cheaper, may be reclaimed)."),
        "dry_run": dict(default=False, type="boolean",
                        description="Validate uploads and write the report only: no cluster, no Spark."),
    }


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
        if self.pca_k is not None and not 1 <= int(self.pca_k) <= 1280:
            raise ParamsError(f"pca_k={self.pca_k!r} must be between 1 and 1280")
        if self.instance_type not in INSTANCE_TYPES:
            raise ParamsError(f"instance_type={self.instance_type!r} is not one of {', '.join(INSTANCE_TYPES)}")
        if not 1 <= int(self.core_instance_count) <= MAX_CORE_INSTANCES:
            raise ParamsError(f"core_instance_count={self.core_instance_count!r} must be 1..{MAX_CORE_INSTANCES}")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> "RunParams":
        params = dict(params or {})
        known = {k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None}
        return cls(**known)
