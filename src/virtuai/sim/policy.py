"""Scheduling policies to compare: a name and the scheduler's policy knobs.

Policy YAML (every key is optional; the defaults are the scheduler's v1, plain
priority-FIFO)::

    name: fairshare-backfill      # the column title in reports (default: the file's name)
    description: ...              # free text
    order: fairshare              # fifo: priority, then submission time
                                  # fairshare: priority, then the tenant's weighted
                                  #   dominant share of decayed usage (Policy.fair_share)
                                  # las: fairshare between tenants, least attained
                                  #   GPU service within a tenant (Tiresias-like)
    half_life: 7d                 # fair share forgets past usage with this half-life
    allocation_weight: 0.5        # fair-share usage = (1-w) decayed history + w current allocation
    backfill: easy                # none | easy: a later job may start if it does not delay
                                  #   the first blocked job's reservation (needs walltimes)
    preemption: false             # true: preempt borrowers for lenders and lower-priority
                                  #   preemptible jobs for higher ones (requeued, restart)
    max_victim_candidates: 256    # bound on the victims examined per preemptor
    borrowing: true               # tenants of one cohort may borrow each other's unused quota
    preemption_grace: 0           # simulator only: seconds a preempted job takes to stop
    min_run: 0                    # a job is not preempted before it ran this long (1h)
    las_thresholds: [8h, 32h]     # least attained service (order: las): GPU-time bounds
                                  #   of the levels within a priority
    starvation_factor: 4          # las: a job waiting 4x as long as it ran is level 0 again
    starvation_min: 1h            #   (and at least this long)
    las_patience: 0               # las + backfill: no LAS preemption for a job whose
                                  #   reservation would start within this long (0: off)
    short_first: 0                # within a priority (and LAS level), order by submission
                                  #   time plus time limit capped at this (3d), shortest
                                  #   first; 0: off, submission order
    reserve_late: false           # backfill: reserve for the head the nodes whose room
                                  #   comes last, so that room free earlier stays usable
    reservations: 1               # backfill: jobs with a reservation per pass; 1 is EASY
                                  #   (the first blocked job), 2-4 also the next blocked
                                  #   jobs (conservative backfill to that depth)
    checkpoint_interval: 0        # simulator only: a preempted job keeps work up to its last
                                  #   checkpoint, every this much work (0: none, from scratch)
    restart_overhead: 0           # simulator only: seconds each restart spends before progress
                                  #   (both: for the jobs whose trace row, or the command's
                                  #   --checkpoint-interval / --restart-overhead, says none)

Each key maps onto one field of ``virtuai.scheduler.snapshot.Policy`` (except
the simulator-only ones, which model how a victim stops and restarts), and every
policy runs through the one ``virtuai.scheduler.schedule``.

Plain ``fifo`` is plain priority-FIFO, but quotas in a cohort still apply under
every policy: a job that would borrow waits until the jobs within their nominal
quota have had their turn (``docs/scheduling.md``, "borrowers go second").  On a
cluster without cohorts (the generated ones) it is exactly priority-FIFO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib.resources import as_file, files
from itertools import pairwise
from pathlib import Path
from typing import Any

from virtuai.errors import InvalidRequest
from virtuai.scheduler.snapshot import Policy
from virtuai.sim.yamlfile import (
    Section,
    as_bool,
    as_count,
    as_fraction,
    as_seconds,
    as_str,
    load_yaml,
    parse_yaml,
)

__all__ = [
    "EXAMPLE_POLICIES",
    "Backfill",
    "Order",
    "PolicySpec",
    "describe_examples",
    "example_policy",
    "load_policy",
    "parse_policy",
]

EXAMPLE_POLICIES = (
    "fifo",
    "fairshare",
    "fairshare-backfill",
    "fairshare-backfill-preemption",
    "las-fairshare",
)
_KEYS = frozenset(
    {
        "name", "description", "order", "half_life", "allocation_weight", "backfill",
        "preemption", "max_victim_candidates", "borrowing", "preemption_grace", "min_run",
        "las_thresholds", "starvation_factor", "starvation_min", "checkpoint_interval",
        "restart_overhead", "las_patience", "short_first", "reserve_late", "reservations",
        "gang_victim_ratio",
    }
)  # fmt: skip
_V1 = Policy()
MAX_FACTOR = 1_000_000  # starvation_factor, gang_victim_ratio: far beyond "never" already


class Order(enum.StrEnum):
    FIFO = "fifo"
    FAIRSHARE = "fairshare"
    LAS = "las"


class Backfill(enum.StrEnum):
    NONE = "none"
    EASY = "easy"


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    order: Order = Order.FIFO
    half_life_s: float = _V1.half_life_s
    allocation_weight: float = _V1.allocation_weight
    backfill: Backfill = Backfill.NONE
    preemption: bool = False
    max_victim_candidates: int = _V1.max_victim_candidates
    borrowing: bool = _V1.borrowing
    preemption_grace_s: float = 0.0
    description: str = ""
    min_run_s: float = 0.0
    las_thresholds_gpu_s: tuple[float, ...] = (8 * 3600.0, 32 * 3600.0)
    starvation_factor: float = 4.0
    starvation_min_s: float = 3600.0
    checkpoint_interval_s: float = 0.0
    restart_overhead_s: float = 0.0
    las_patience_s: float = 0.0
    short_first_cap_s: float = 0.0
    reserve_late: bool = False
    reserve_depth: int = 1
    gang_victim_ratio: float = 0.0

    def scheduler_policy(self) -> Policy:
        """The ``Policy`` the scheduler gets in every snapshot of this run."""
        las = self.order is Order.LAS
        return Policy(
            fair_share=self.order is not Order.FIFO,
            backfill=self.backfill is Backfill.EASY,
            preemption=self.preemption,
            borrowing=self.borrowing,
            half_life_s=self.half_life_s,
            allocation_weight=self.allocation_weight,
            max_victim_candidates=self.max_victim_candidates,
            min_run_s=self.min_run_s,
            las_thresholds_gpu_s=self.las_thresholds_gpu_s if las else (),
            starvation_factor=self.starvation_factor if las else 0.0,
            starvation_min_s=self.starvation_min_s if las else 0.0,
            las_patience_s=self.las_patience_s if las else 0.0,
            short_first_cap_s=self.short_first_cap_s,
            reserve_late=self.reserve_late,
            reserve_depth=self.reserve_depth,
            gang_victim_ratio=self.gang_victim_ratio if las else 0.0,
        )

    def knobs(self) -> dict[str, Any]:
        """The knobs, JSON-ready."""
        return {
            "order": str(self.order),
            "half_life_s": self.half_life_s,
            "allocation_weight": self.allocation_weight,
            "backfill": str(self.backfill),
            "preemption": self.preemption,
            "max_victim_candidates": self.max_victim_candidates,
            "borrowing": self.borrowing,
            "preemption_grace_s": self.preemption_grace_s,
            "min_run_s": self.min_run_s,
            "las_thresholds_gpu_s": list(self.las_thresholds_gpu_s),
            "starvation_factor": self.starvation_factor,
            "starvation_min_s": self.starvation_min_s,
            "checkpoint_interval_s": self.checkpoint_interval_s,
            "restart_overhead_s": self.restart_overhead_s,
            "las_patience_s": self.las_patience_s,
            "short_first_cap_s": self.short_first_cap_s,
            "reserve_late": self.reserve_late,
            "reserve_depth": self.reserve_depth,
            "gang_victim_ratio": self.gang_victim_ratio,
        }


FIFO = PolicySpec("fifo")


def load_policy(path: Path) -> PolicySpec:
    """Read a policy YAML file; errors name the file, line and field."""
    return _policy(load_yaml(path), default_name=path.stem)


def parse_policy(text: str, source: str = "policy.yaml") -> PolicySpec:
    return _policy(parse_yaml(text, source), default_name=Path(source).stem)


def describe_examples() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped policy, in ``EXAMPLE_POLICIES`` order."""
    return [(name, example_policy(name).description) for name in EXAMPLE_POLICIES]


def example_policy(name: str) -> PolicySpec:
    """One of the policies shipped in ``virtuai/sim/data/policies`` (``EXAMPLE_POLICIES``)."""
    if name not in EXAMPLE_POLICIES:
        raise InvalidRequest(
            f"no example policy {name!r}; there are {', '.join(EXAMPLE_POLICIES)}", field="policy"
        )
    with as_file(files("virtuai.sim") / "data" / "policies" / f"{name}.yaml") as path:
        return load_policy(path)


def _choice(kind: type[enum.StrEnum]) -> Any:
    def parse(value: Any, field: str) -> enum.StrEnum:
        text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if isinstance(value, bool) and kind is Backfill:
            text = "easy" if value else "none"
        try:
            return kind(text)
        except ValueError:
            known = " or ".join(member.value for member in kind)
            raise InvalidRequest(f"{field}: {value!r} is not {known}", field=field) from None

    return parse


def _policy(root: Section, default_name: str) -> PolicySpec:
    root.check_known(_KEYS)
    return PolicySpec(
        name=root.get("name", as_str, default_name),
        order=root.get("order", _choice(Order), Order.FIFO),
        half_life_s=root.get("half_life", as_seconds, _V1.half_life_s),
        allocation_weight=root.get("allocation_weight", as_fraction, _V1.allocation_weight),
        backfill=root.get("backfill", _choice(Backfill), Backfill.NONE),
        preemption=root.get("preemption", as_bool, False),
        max_victim_candidates=root.get(
            "max_victim_candidates", as_count, _V1.max_victim_candidates
        ),
        borrowing=root.get("borrowing", as_bool, _V1.borrowing),
        preemption_grace_s=root.get("preemption_grace", _as_grace, 0.0),
        description=root.get("description", as_str, ""),
        min_run_s=root.get("min_run", _as_grace, 0.0),
        las_thresholds_gpu_s=root.get("las_thresholds", _as_thresholds, (8 * 3600.0, 32 * 3600.0)),
        starvation_factor=root.get("starvation_factor", _as_factor, 4.0),
        starvation_min_s=root.get("starvation_min", _as_grace, 3600.0),
        checkpoint_interval_s=root.get("checkpoint_interval", _as_grace, 0.0),
        restart_overhead_s=root.get("restart_overhead", _as_grace, 0.0),
        las_patience_s=root.get("las_patience", _as_grace, 0.0),
        short_first_cap_s=root.get("short_first", _as_grace, 0.0),
        reserve_late=root.get("reserve_late", as_bool, False),
        reserve_depth=root.get("reservations", _as_depth, 1),
        gang_victim_ratio=root.get("gang_victim_ratio", _as_factor, 0.0),
    )


def _as_thresholds(value: Any, field: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            f"{field}: expected a list of GPU-times such as [1h, 16h], not {value!r}", field=field
        )
    out = tuple(as_seconds(v, field) for v in value)
    if any(b <= a for a, b in pairwise(out)):
        raise InvalidRequest(f"{field}: must be increasing, not {value!r}", field=field)
    return out


def _as_depth(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise InvalidRequest(
            f"{field}: expected a whole number of reservations from 1 to 16, not {value!r}",
            field=field,
        )
    return value


def _as_factor(value: Any, field: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_FACTOR
    ):
        raise InvalidRequest(
            f"{field}: expected a number from 0 to {MAX_FACTOR:,}, not {value!r}", field=field
        )
    return float(value)


def _as_grace(value: Any, field: str) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return as_seconds(value, field)
