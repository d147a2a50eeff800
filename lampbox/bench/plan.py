"""A bench as data: a list of configurations (one row each) on one task split, and the row the
others are compared with.

Every bench is a Plan. The grid flags of `lampbox bench` expand to one (`BenchSpec.plan`),
keeping the grid's record and key so that stores made before plans keep serving their runs; a
plan file or `--config` strings give one directly (`planfile.py`). The store keeps a plan's
labels and reference in the bench's record, so the report and the TUI name and compare its rows
as the bench did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lampbox.lab.specs import RunSpec

BASELINE, RETRIEVAL, RETRIEVAL_ONLY, SELECTION = "baseline", "retrieval", "retrieval-only", "selection"


def role_of(spec: RunSpec) -> str:
    """A run's role: a model without retrieved items (baseline), a model with them (retrieval),
    no model at all (retrieval-only: a model-free method), or an RSPG selection among a
    selector's pool (selection)."""
    if spec.method_impl.selects:
        return SELECTION
    if not spec.uses_model:
        return RETRIEVAL_ONLY
    return RETRIEVAL if spec.personalized else BASELINE


@dataclass(frozen=True)
class Configuration:
    """One row of a bench: the run, its role and, optionally, its name in the table."""

    spec: RunSpec
    role: str
    label: str | None = None  # None: the run's own label (retriever, k, method, backend:model)
    train: str | None = None  # the command that makes its trained model (kept in the record)

    @property
    def name(self) -> str:
        return self.label or self.spec.label


@dataclass(frozen=True)
class Plan:
    """The configurations of one bench, in table order, on one task split."""

    task: str
    scheme: str
    split: str
    configurations: tuple[Configuration, ...]
    limit: int | None = None
    users: int | None = None
    # The row every other row is compared with (an index). None: the grid's comparison, each
    # model row against its own backend's no-personalization row.
    reference: int | None = None
    source: str | None = None  # where the plan came from: its file, or "--config"
    # The grid record this plan was expanded from: a grid bench keeps its record and key.
    grid: Mapping[str, Any] | None = None
    min_profile: int | None = None  # only users with at least this many profile items
    skip: int = 0  # leave out the first N questions (before `limit`)

    @property
    def reference_configuration(self) -> Configuration | None:
        return None if self.reference is None else self.configurations[self.reference]

    def key(self, run_keys: Sequence[str]) -> str:
        """The bench's key: its runs and roles (a grid's key, unchanged), plus a plan's labels
        and reference (two plans that name or compare the same runs differently are two benches)."""
        runs = [(key, configuration.role) for key, configuration in zip(run_keys, self.configurations, strict=True)]
        data: Any = runs
        if self.grid is None:
            data = {"runs": runs, "labels": [c.label for c in self.configurations], "reference": self.reference}
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:24]

    def to_json(self, run_keys: Sequence[str]) -> dict[str, Any]:
        """The bench's record in the store (a grid's is the grid's own)."""
        if self.grid is not None:
            return dict(self.grid)
        configurations = []
        for key, configuration in zip(run_keys, self.configurations, strict=True):
            entry: dict[str, Any] = {"label": configuration.name, "role": configuration.role, "run_key": key}
            if configuration.train:
                entry["train"] = configuration.train
            entry["spec"] = configuration.spec.to_json()
            configurations.append(entry)
        reference = self.reference_configuration
        return {
            "task": self.task,
            "scheme": self.scheme,
            "split": self.split,
            "limit": self.limit,
            "users": self.users,
            **({"min_profile": self.min_profile} if self.min_profile is not None else {}),
            **({"skip": self.skip} if self.skip else {}),
            "plan": self.source,
            "reference": None
            if reference is None or self.reference is None
            else {"label": reference.name, "run_key": run_keys[self.reference]},
            "configurations": configurations,
        }


@dataclass(frozen=True)
class StoredPlan:
    """What a bench's record says about naming and comparing its rows."""

    labels: dict[str, str]  # run key -> the plan's label
    reference: str | None  # the reference row's run key (None: the grid's comparison)


def stored_plan(record: Mapping[str, Any]) -> StoredPlan:
    """The labels and reference of a stored bench record (a grid's: none)."""
    labels = {str(entry["run_key"]): str(entry["label"]) for entry in record.get("configurations", ())}
    reference = record.get("reference")
    return StoredPlan(labels, None if not reference else str(reference["run_key"]))
