"""The code lists the pipeline shares with dbt, each defined once as a seed under dbt_project/seeds/.

dbt loads the seed and tests the models' code columns against it (``relationships``); the loader's
contract, the configuration and the marts read the same file (first column: the code, in order).
Labels and per-code attributes (a stage's health, a status's label) live in the same row.
"""

from __future__ import annotations

import csv
from functools import cache

from tierline.settings import DBT_PROJECT_DIR

SEEDS_DIR = DBT_PROJECT_DIR / "seeds"


@cache
def rows(seed: str) -> tuple[dict[str, str], ...]:
    with (SEEDS_DIR / f"{seed}.csv").open(encoding="utf-8", newline="") as handle:
        return tuple(csv.DictReader(handle))


def codes(seed: str) -> tuple[str, ...]:
    """The codes of a vocabulary seed, in the file's order."""
    return tuple(next(iter(row.values())) for row in rows(seed))


def lifecycle_stages() -> tuple[str, ...]:
    return codes("lifecycle_stages")


def order_statuses() -> tuple[str, ...]:
    return codes("order_statuses")


def customer_types() -> tuple[str, ...]:
    return codes("customer_types")
