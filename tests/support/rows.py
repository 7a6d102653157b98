"""Minimal valid table rows for store tests: every required column filled, overrides by keyword."""

from __future__ import annotations

import datetime as dt
from typing import Any

from virtuai.store.models import ApiTokenRow, JobRow, TaskRow, TenantRow, UserRow

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def tenant(name: str = "physics", **overrides: Any) -> TenantRow:
    return TenantRow(**{"name": name, "created_at": T0, **overrides})


def user(name: str = "ada", **overrides: Any) -> UserRow:
    return UserRow(**{"name": name, "created_at": T0, **overrides})


def api_token(owner: UserRow, token_hash: str = "0" * 64, **overrides: Any) -> ApiTokenRow:
    values = {"user_id": owner.id, "token_hash": token_hash, "created_at": T0, **overrides}
    return ApiTokenRow(**values)


def job(owner: UserRow, team: TenantRow, **overrides: Any) -> JobRow:
    values = {
        "tenant_id": team.id,
        "user_id": owner.id,
        "name": "train",
        "state": "pending",
        "command": ["python", "train.py"],
        "cpu_milli": 1000,
        "memory": 2**30,
        "walltime_s": 3600,
        "priority_class": "normal",
        "priority": 0,
        "submitted_at": T0,
        "updated_at": T0,
        **overrides,
    }
    return JobRow(**values)


def task(parent: JobRow, index: int = 0, **overrides: Any) -> TaskRow:
    values = {
        "job_id": parent.id,
        "attempt": 0,
        "index": index,
        "node": "node-1",
        "driver": "local",
        **overrides,
    }
    return TaskRow(**values)
