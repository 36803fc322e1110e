"""The run decided once (docs/design.md, "The run plan").

The first task validates the uploads and makes a frozen ``RunPlan``: the route and why, the trigger
params parsed and checked once, the cluster's shape, the PCA target, and the route's steps with the
polls each step's sensor may spend. Every later task reads that plan from XCom and decides nothing
again. Plain functions and values: tests call them without Airflow.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fruits_contract.lake import EXTRACT_FEATURES, PREDICT_UPLOADS, REDUCE_PCA, STEP_NAMES, TRAIN_CLASSIFIER
from fruits_pipeline.cost import classifier_step_seconds
from fruits_pipeline.params import ClusterShape, PcaTarget, RunParams
from fruits_pipeline.routes import ROUTE_DRY_RUN, ROUTE_NOTHING, ROUTE_PCA_ONLY, ROUTE_RUN, ROUTES_WITH_WORK

# Which of the steps each route runs, in the order they are added to the cluster. A PCA-only run
# featurized no upload, so it has none to predict.
STEPS_OF_ROUTE = {ROUTE_RUN: STEP_NAMES, ROUTE_PCA_ONLY: (REDUCE_PCA, TRAIN_CLASSIFIER)}

# Conservative throughput for sizing sensor timeouts (MobileNetV2 on CPU, per core node) and the
# time a transient cluster needs before the first step starts (provisioning + bootstrap).
IMAGES_PER_SECOND_PER_CORE_NODE = 10
CLUSTER_START_SECONDS = 20 * 60
# A PCA refit reads 1280 floats per image and fits a 1280x1280 covariance: one core node per this many
# featurized images is plenty (the features of 200,000 images are ~1 GB).
PCA_IMAGES_PER_CORE_NODE = 200_000


def decide_route(valid_count: int, dry_run: bool, *, pca_target: PcaTarget, latest_pca: dict | None = None,
                 featurized_count: int = 0, labels_digest: str | None = None) -> tuple[str, str]:
    """(route, why) of a run. ``latest_pca``: the current PCA's pointer (``report.current_pca``) or None;
    ``featurized_count``: images already featurized by earlier runs (what a PCA-only run would refit on);
    ``labels_digest``: the users' confirmed labels as validation found them (``confirmed_labels``): when
    they differ from those the latest run trained on, the classifier is trained again."""
    if dry_run:
        return ROUTE_DRY_RUN, "dry run asked for: uploads validated and manifests written, no Spark"
    if valid_count > 0:
        return ROUTE_RUN, f"{valid_count} valid new upload(s) to featurize, then a PCA refit on all features"
    if featurized_count == 0:
        return ROUTE_NOTHING, "no valid new upload and no features yet"
    if latest_pca is None:
        return ROUTE_PCA_ONLY, (f"no valid new upload, but no PCA output yet for the {featurized_count} "
                                f"featurized images: PCA {pca_target} without feature extraction")
    latest_target = PcaTarget.from_dict(latest_pca.get("pca_target"))
    if labels_digest is not None and labels_digest != latest_pca.get("labels_digest"):
        return ROUTE_PCA_ONLY, (f"no valid new upload, but the users' confirmed labels changed since the latest "
                                f"classifier (run {latest_pca.get('run_key')}): PCA {pca_target} and classifier "
                                "trained again, without feature extraction")
    if latest_target != pca_target:
        return ROUTE_PCA_ONLY, (f"no valid new upload; PCA target {pca_target} differs from the "
                                f"latest PCA output's ({latest_target or 'none'}, run "
                                f"{latest_pca.get('run_key')}): PCA refit on all features without feature extraction")
    return ROUTE_NOTHING, (f"no valid new upload and the PCA target {pca_target} is the latest "
                           f"PCA output's (run {latest_pca.get('run_key')})")


def cluster_for(route: str, params: RunParams, featurized_images: int) -> ClusterShape:
    """The cluster a route needs: the form's for features + PCA; for PCA only, one core node per
    PCA_IMAGES_PER_CORE_NODE featurized images, never more than the form asks for."""
    cluster = params.cluster
    if route != ROUTE_PCA_ONLY:
        return cluster
    nodes = max(1, -(-int(featurized_images) // PCA_IMAGES_PER_CORE_NODE))
    return dataclasses.replace(cluster, core_instance_count=min(nodes, cluster.core_instance_count))


def step_seconds(valid_images: int, core_instance_count: int, featurized_images: int = 0) -> dict[str, float]:
    """Each step's own time, generously: 3x what it is expected to take."""
    lake_images = valid_images + featurized_images
    return {
        EXTRACT_FEATURES: 3 * valid_images / (IMAGES_PER_SECOND_PER_CORE_NODE * core_instance_count),
        REDUCE_PCA: 15 * 60 + 3 * lake_images / 1000,  # a refit over every batch; small next to the features
        TRAIN_CLASSIFIER: 15 * 60 + 3 * classifier_step_seconds(lake_images),  # the same model as `make cost`
        PREDICT_UPLOADS: 15 * 60 + 3 * valid_images / 1000,  # NumPy on the features of the day's uploads
    }


def sensor_max_polls(steps: tuple[str, ...], valid_images: int, core_instance_count: int, poll: int,
                     featurized_images: int = 0) -> dict[str, int]:
    """Polls each step's sensor may spend. The sensors all start once the steps are added, while the
    cluster may still be starting, so a step's budget is the cluster's start and every step up to
    and including its own."""
    own = step_seconds(valid_images, core_instance_count, featurized_images)
    budget, polls = CLUSTER_START_SECONDS, {}
    for name in steps:
        budget += own[name]
        polls[name] = max(1, int(budget // poll) + 1)
    return polls


@dataclass(frozen=True)
class RunPlan:
    run_key: str
    route: str
    reason: str
    params: RunParams  # the trigger form's, parsed and checked once
    cluster: ClusterShape
    pca_target: PcaTarget
    max_polls: dict[str, int]  # the route's steps in the order they run -> polls their sensor may spend
    validation: dict  # what validation found: counts, rejects, manifests, faults (ValidationResult.summary)
    latest_pca_run: str | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self.max_polls)

    @property
    def has_work(self) -> bool:
        """Whether the run runs Spark steps (on a cluster, or locally)."""
        return self.route in ROUTES_WITH_WORK

    def report_validation(self) -> dict:
        """What the run report reads about validation and the route."""
        return {**self.validation, "route": self.route, "route_reason": self.reason,
                "pca_target": self.pca_target.as_dict(), "latest_pca_run": self.latest_pca_run}

    def to_xcom(self) -> dict:
        return {"run_key": self.run_key, "route": self.route, "reason": self.reason,
                "params": dataclasses.asdict(self.params), "cluster": dataclasses.asdict(self.cluster),
                "pca_target": self.pca_target.as_dict(), "max_polls": dict(self.max_polls),
                "validation": self.validation, "latest_pca_run": self.latest_pca_run}

    @classmethod
    def from_xcom(cls, data: dict) -> "RunPlan":
        return cls(run_key=data["run_key"], route=data["route"], reason=data["reason"],
                   params=RunParams(**data["params"]), cluster=ClusterShape(**data["cluster"]),
                   pca_target=PcaTarget.from_dict(data["pca_target"]), max_polls=dict(data["max_polls"]),
                   validation=dict(data["validation"]), latest_pca_run=data.get("latest_pca_run"))


def make_plan(run_key: str, params: RunParams, validation: dict, *, latest_pca: dict | None,
              poll_seconds: int) -> RunPlan:
    """The plan of a run from its params and what validation found (``ValidationResult.summary()``)."""
    featurized = int(validation.get("featurized_in_lake", 0))
    route, reason = decide_route(int(validation["valid"]), params.dry_run, pca_target=params.pca_target,
                                 latest_pca=latest_pca, featurized_count=featurized,
                                 labels_digest=(validation.get("labels") or {}).get("digest"))
    cluster = cluster_for(route, params, featurized)
    steps = STEPS_OF_ROUTE.get(route, ())
    return RunPlan(run_key=run_key, route=route, reason=reason, params=params, cluster=cluster,
                   pca_target=params.pca_target,
                   max_polls=sensor_max_polls(steps, int(validation["valid"]), cluster.core_instance_count,
                                              poll_seconds, featurized),
                   validation=validation, latest_pca_run=latest_pca and latest_pca.get("run_key"))

