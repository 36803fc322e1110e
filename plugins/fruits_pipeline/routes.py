"""The routes a run can take (docs/design.md, "The run plan"): run_plan.decide_route picks one, the report says which and why."""
from __future__ import annotations

ROUTE_NOTHING = "nothing_to_do"
ROUTE_DRY_RUN = "dry_run"
ROUTE_RUN = "features_and_pca"
ROUTE_PCA_ONLY = "pca_only"
ROUTES_WITH_WORK = (ROUTE_RUN, ROUTE_PCA_ONLY)
# How the run summary names them.
ROUTE_TITLES = {
    ROUTE_NOTHING: "nothing to do",
    ROUTE_DRY_RUN: "dry run",
    ROUTE_RUN: "features + PCA",
    ROUTE_PCA_ONLY: "PCA only",
}
