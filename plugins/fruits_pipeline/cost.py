"""Estimated cluster cost: instance-hours x the eu-west-3 price table kept in the repository."""
from __future__ import annotations

import json
from pathlib import Path


class PriceTableError(ValueError):
    pass


def load_price_table(path: Path) -> dict:
    table = json.loads(Path(path).read_text())
    for key in ("region", "currency", "as_of", "source", "instances"):
        if key not in table:
            raise PriceTableError(f"price table {path} has no {key!r}")
    return table


def hourly_price(table: dict, instance_type: str, *, spot: bool = False) -> float:
    """EC2 (on-demand or typical spot) + EMR uplift for one instance-hour."""
    try:
        row = table["instances"][instance_type]
    except KeyError:
        raise PriceTableError(
            f"{instance_type!r} is not in the price table ({', '.join(sorted(table['instances']))})"
        ) from None
    ec2 = row["spot_hourly_typical"] if spot else row["ec2_on_demand_hourly"]
    return float(ec2) + float(row["emr_hourly"])


def estimate_cluster_cost(table: dict, *, instance_type: str, core_instance_count: int, use_spot: bool,
                          seconds: float, master_instance_type: str | None = None) -> dict:
    """Cost of one master (on-demand) and the core nodes for ``seconds`` of cluster life.

    EMR bills per second with a one-minute minimum."""
    hours = max(float(seconds), 60.0) / 3600.0
    master_type = master_instance_type or instance_type
    master = hourly_price(table, master_type) * hours
    core = hourly_price(table, instance_type, spot=use_spot) * hours * core_instance_count
    return {
        "currency": table["currency"],
        "amount": round(master + core, 4),
        "instance_hours": round(hours * (1 + core_instance_count), 4),
        "master": {"instance_type": master_type, "count": 1, "market": "ON_DEMAND"},
        "core": {"instance_type": instance_type, "count": core_instance_count,
                 "market": "SPOT" if use_spot else "ON_DEMAND"},
        "price_table": {"region": table["region"], "as_of": table["as_of"], "source": table["source"]},
    }


# train_classifier retrains on every featurized image, in one task for determinism (docs/classifier.md), so
# its time grows with the lake, not with the day, and not faster on a bigger cluster. Measured: one fit
# (k=100, 10 labels) took 10.7 s more for 108,560 images than for 27,140, i.e. ~7,600 images/s, and an
# L-BFGS iteration costs in proportion to images x labels.
CLASSIFIER_IMAGE_LABELS_PER_SECOND = 76_000
CLASSIFIER_FITS = 6  # the run's k and up to 5 other numbers of components (accuracy by k)
FULL_DATASET_LABELS = 131  # Fruits-360 as published (Mureşan & Oltean, 2020); more labels since


def classifier_step_seconds(lake_images: int, labels: int = FULL_DATASET_LABELS) -> float:
    """The classifier step: CLASSIFIER_FITS fits over every featurized image of the lake, in one task."""
    return CLASSIFIER_FITS * lake_images * labels / CLASSIFIER_IMAGE_LABELS_PER_SECOND
