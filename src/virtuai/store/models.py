"""Database tables. One ``*Row`` class per table; domain objects are converted explicitly.

Times are stored as timezone-aware UTC datetimes (``UtcDateTime``) so that
SQLite and PostgreSQL return the same values.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from virtuai.domain.vcluster import VcState
from virtuai.domain.workload import JobState, TaskOutcome

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# JSONB on PostgreSQL (comparable, indexable), JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


E = TypeVar("E", bound=enum.StrEnum)


class StateColumn(TypeDecorator[E]):
    """A state machine's enum in, the same enum out, stored as its value (a short string).

    Writing a value the enum does not have fails at the flush, before it reaches the
    database; strings equal to a member's value are accepted (``StrEnum`` members are
    strings, so comparisons with either keep working)."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum_type = enum_type

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return self.enum_type(value).value
        except ValueError:
            raise ValueError(f"{value!r} is not a {self.enum_type.__name__}") from None

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    cohort: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # Fair share: past usage in resource-seconds, decayed with the half-life up to
    # usage_as_of (epoch seconds); updated in the transaction that records usage.
    usage_cpu_milli_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    usage_memory_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    usage_gpu_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    usage_as_of: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # Accounts (issue #11): a disabled tenant submits nothing new; a deleted one is gone
    # from every list but its rows stay for accounting (its name stays reserved).
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # Notebooks (issue #10): stopped after this long without activity; NULL = the server's
    # default (``notebooks.idle_timeout_s``).
    notebook_idle_timeout_s: Mapped[int | None] = mapped_column(Integer)

    quotas: Mapped[list[TenantQuotaRow]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", order_by="TenantQuotaRow.pool"
    )

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = {"sqlite_autoincrement": True}


class TenantQuotaRow(Base):
    """A tenant's quota in one pool, or over all pools (pool ``*``); NULL = unlimited.

    Nominal is what the tenant is guaranteed; borrowing is how much more it may
    take from its cohort's unused quota; lending is how much of its own unused
    quota the cohort may take (docs/scheduling.md).
    """

    __tablename__ = "tenant_quotas"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    pool: Mapped[str] = mapped_column(String(63), primary_key=True)
    nominal_cpu_milli: Mapped[int | None] = mapped_column(BigInteger)
    nominal_memory: Mapped[int | None] = mapped_column(BigInteger)
    nominal_gpu: Mapped[int | None] = mapped_column(Integer)
    borrowing_cpu_milli: Mapped[int | None] = mapped_column(BigInteger)
    borrowing_memory: Mapped[int | None] = mapped_column(BigInteger)
    borrowing_gpu: Mapped[int | None] = mapped_column(Integer)
    lending_cpu_milli: Mapped[int | None] = mapped_column(BigInteger)
    lending_memory: Mapped[int | None] = mapped_column(BigInteger)
    lending_gpu: Mapped[int | None] = mapped_column(Integer)

    tenant: Mapped[TenantRow] = relationship(back_populates="quotas")


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # "local" users authenticate with API tokens; "oidc" users are provisioned from JWTs.
    source: Mapped[str] = mapped_column(String(16), default="local")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # The tenant it was created for: its owners may add it back after removing it.  No
    # foreign key: deleting a tenant clears it (SQLite would need a table copy to add one).
    home_tenant_id: Mapped[int | None] = mapped_column(Integer)
    # A disabled user cannot authenticate; a deleted one neither, and is gone from lists.
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    memberships: Mapped[list[MembershipRow]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = {"sqlite_autoincrement": True}


class MembershipRow(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))

    user: Mapped[UserRow] = relationship(back_populates="memberships")
    tenant: Mapped[TenantRow] = relationship()


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is safe and lookups stay O(1).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    name: Mapped[str | None] = mapped_column(String(100))
    # Checked at every request: an expired or revoked token answers 401 at once.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = {"sqlite_autoincrement": True}


class NodeRow(Base):
    """Inventory as last reported by a driver."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    site: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # Many machines (docs/architecture.md, "Several machines"): what the node is, what an
    # administrator wants of it (ready | cordoned | draining), when the leader found it
    # lost (shown as ``unreachable``), and its heartbeat (a counter: the leader judges
    # liveness by its own clock, so machines' clocks may differ).
    node_class: Mapped[str] = mapped_column(String(16), default="light", server_default="light")
    labels: Mapped[dict[str, str]] = mapped_column(Json, default=dict, server_default="{}")
    state: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    drain_requeue: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lost_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    heartbeat_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    address: Mapped[str] = mapped_column(String(255), default="", server_default=text("''"))


class LeaseRow(Base):
    """The scheduling lease: who leads, and the fencing epoch that grows at every takeover.

    The holder bumps ``renew_seq``; another instance that sees neither it nor the
    epoch change for the lease's time (by its own monotonic clock) takes over with
    a compare-and-set that increments ``epoch``.  Every write of the leader's loops
    first checks, under a shared lock on this row, that the epoch is still its own.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    holder_node: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger)
    renew_seq: Mapped[int] = mapped_column(BigInteger)
    renewed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16), default="job")
    state: Mapped[JobState] = mapped_column(StateColumn(JobState), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer)

    # The request, per task.
    command: Mapped[list[str]] = mapped_column(Json)
    env: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    workdir: Mapped[str | None] = mapped_column(Text)
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(Integer, default=0)
    tasks: Mapped[int] = mapped_column(Integer, default=1)
    walltime_s: Mapped[int] = mapped_column(Integer)
    priority_class: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str | None] = mapped_column(String(63))
    # Arrays: every element is a job; they share array_id (the first element's id).
    array_id: Mapped[int | None] = mapped_column(Integer, index=True)
    array_index: Mapped[int | None] = mapped_column(Integer)
    array_max_running: Mapped[int | None] = mapped_column(Integer)
    # [{"kind": "afterok", "job_id": 12}, ...]
    dependencies: Mapped[list[dict[str, Any]]] = mapped_column(
        Json, default=list, server_default="[]"
    )
    # Preemption: the checkpoint signal, how long the job gets before SIGKILL, and
    # whether it goes back to the queue (same id) or ends as `preempted`.
    checkpoint_signal: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    checkpoint_grace_s: Mapped[int | None] = mapped_column(Integer)
    requeue: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # While preempting: the pending job it makes room for (which waits instead of preempting
    # more).  While pending: when the scheduler expects it to start (backfill's reservation).
    preempted_for: Mapped[int | None] = mapped_column(Integer)
    # ... or the virtual cluster it was preempted for (a cluster waiting for admission).
    preempted_for_vc: Mapped[int | None] = mapped_column(Integer)
    # Every job whose preemption stopped this one (ids, oldest first, at most
    # ``control.scheduling.PREEMPTED_BY_KEPT``): the scheduler never lets it preempt them back.
    preempted_by: Mapped[list[int]] = mapped_column(Json, default=list, server_default="[]")
    expected_start_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # The virtual cluster it runs in; NULL: on the physical nodes.  Jobs in a cluster are
    # scheduled onto its nodes only and hold nothing of the platform's capacity or quota.
    vc_id: Mapped[int | None] = mapped_column(
        ForeignKey("virtual_clusters.id"), index=True, default=None
    )
    # Targeting: a node class (light | fat | gpu) and labels (``key=value`` or a bare name).
    node_class: Mapped[str | None] = mapped_column(String(16), default=None)
    constraints: Mapped[list[str]] = mapped_column(Json, default=list, server_default="[]")
    # The tenant's Python environment it runs in (its bin first on PATH); NULL: none.
    environment: Mapped[str | None] = mapped_column(String(63), default=None)
    # An image (`virtuai image list`) whose root the job runs over, in a sandbox.
    image: Mapped[str | None] = mapped_column(String(63), default=None)
    # The tenant's dataset it reads (runs only where it is), and whether it asked for a copy
    # where it runs instead (``--stage``): it waits, pending, until the copy is made.
    data: Mapped[str | None] = mapped_column(String(63), default=None)
    stage: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Desired state set by users; the life-cycle loop acts on it.
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # The job asked to be requeued (``scontrol requeue``): requeue it whatever its tasks' end.
    requeue_requested_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # Why the platform (not a user) cancelled it, e.g. "culled after 1h idle": the reason
    # its end shows instead of "cancelled by request".
    cancel_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # A notebook's last activity (Jupyter's own, or a request through the proxy), recorded
    # by the server of the machine it runs on; the idle culler reads it.
    activity_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)

    # Observed state.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    placement: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    # Rendezvous port of a gang (MASTER_PORT), chosen once per attempt.
    master_port: Mapped[int | None] = mapped_column(Integer)
    # A fixed port its every task holds on its node (a service's ``port: N``; migration 0030).
    host_port: Mapped[int | None] = mapped_column(Integer, default=None)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    admitted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # Set by the database itself on every insert and every update of what the scheduler
    # reads (triggers: ``store.changes``): the scheduling pass reads only the jobs changed
    # since its last one.  Never written by the code.
    change_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), index=True)

    tenant: Mapped[TenantRow] = relationship()
    user: Mapped[UserRow] = relationship()
    vc: Mapped[VirtualClusterRow | None] = relationship()

    # Job ids name task directories on disk: never reuse one (SQLite would after a delete).
    __table_args__ = (
        Index("ix_jobs_tenant_state", "tenant_id", "state"),
        Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
        {"sqlite_autoincrement": True},
    )


class TaskRow(Base):
    """One process of one attempt of a job, as launched by a driver."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(128))
    # The machine (a node's name) whose reconciler launches, observes and stops it: the
    # node itself, or for a task in a virtual node the machine hosting that node.
    host: Mapped[str | None] = mapped_column(String(128), index=True)
    driver: Mapped[str] = mapped_column(String(32))
    # The driver's own record (JSON), enough for a restarted server to find the task again.
    # none_as_null: Python None is SQL NULL (not JSON 'null'), so `handle IS NULL` finds it.
    handle: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    outcome: Mapped[TaskOutcome | None] = mapped_column(StateColumn(TaskOutcome, 32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    stop_requested_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    released: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (UniqueConstraint("job_id", "attempt", "index", name="uq_tasks_identity"),)


class JobEventRow(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="system")


class VirtualClusterRow(Base):
    """A tenant's virtual cluster: nodes of equal size, a private subnet, shared storage.

    ``state`` is a ``VcState``; ``admitted_at`` is set while the scheduler's
    placement (``placement``, one entry per node, as jobs') holds resources.
    """

    __tablename__ = "virtual_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(63))
    # The runtime's identity of the cluster (names its state directory and kernel objects).
    runtime_id: Mapped[str] = mapped_column(String(63), unique=True)
    state: Mapped[VcState] = mapped_column(StateColumn(VcState), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")

    # The request: ``nodes`` nodes of these resources each.
    nodes: Mapped[int] = mapped_column(Integer)
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(Integer, default=0)
    image: Mapped[str] = mapped_column(String(63))
    gateway: Mapped[bool] = mapped_column(Boolean, default=False)
    subnet: Mapped[str] = mapped_column(String(43))
    priority: Mapped[int] = mapped_column(Integer)

    # Observed / decided.
    placement: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    admitted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    # What the runtime last reported of each node: [{index, hostname, address, state, problems}]
    observed: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    observed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # When it last asked to be admitted (created, or resume requested): its place in the queue.
    requested_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    tenant: Mapped[TenantRow] = relationship()
    user: Mapped[UserRow] = relationship()

    # A live cluster (not deleted, not failed) owns its name in its tenant and its subnet.
    __table_args__ = (
        Index(
            "ix_virtual_clusters_live_name",
            "tenant_id",
            "name",
            unique=True,
            sqlite_where=text("state NOT IN ('deleted', 'failed')"),
            postgresql_where=text("state NOT IN ('deleted', 'failed')"),
        ),
        Index(
            "ix_virtual_clusters_live_subnet",
            "subnet",
            unique=True,
            sqlite_where=text("state NOT IN ('deleted', 'failed')"),
            postgresql_where=text("state NOT IN ('deleted', 'failed')"),
        ),
        {"sqlite_autoincrement": True},
    )


class VcEventRow(Base):
    """A state change of a virtual cluster (or a notable fact: admitted, reconciled)."""

    __tablename__ = "vc_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vc_id: Mapped[int] = mapped_column(
        ForeignKey("virtual_clusters.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="system")


class UsageRow(Base):
    """What one finished task held, and for how long: the base of accounting."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    task_index: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    node: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    wall_s: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float] = mapped_column(Float)
    gpu_s: Mapped[float] = mapped_column(Float)
    memory_gb_s: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "task_index", name="uq_usage_records_task"),
    )


class MetaRow(Base):
    """Small key/value facts about this installation (e.g. that bootstrap has happened)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SiteRow(Base):
    """A site where the platform sends work (a Slurm cluster), as added by an administrator.

    ``state`` is a ``SiteState``.  The SSH key is not here but in a file only the
    server can read (``identity_path``, mode 0600); ``known_hosts`` pins the login
    node's host key.  The rest is what the site loop last observed (``sinfo``,
    ``squeue``).
    """

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="slurm")
    state: Mapped[str] = mapped_column(String(16), default="active")
    # Marks this installation's jobs on the site (their --comment).
    token: Mapped[str] = mapped_column(String(32))
    # SSH: "user@host[:port]"; NULL for a local site (the server runs where sbatch works).
    login: Mapped[str | None] = mapped_column(String(255))
    identity_path: Mapped[str | None] = mapped_column(Text)
    known_hosts: Mapped[str] = mapped_column(Text, default="")
    partition: Mapped[str | None] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    account_map: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    max_jobs: Mapped[int | None] = mapped_column(Integer)
    # Observed.
    health: Mapped[str] = mapped_column(String(16), default="unknown")
    message: Mapped[str] = mapped_column(Text, default="")
    partitions: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    capacity: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    queue_depth: Mapped[int] = mapped_column(Integer, default=0)
    # How long a job would wait there now (Slurm's squeue --start backlog); NULL: unknown.
    expected_wait_s: Mapped[int | None] = mapped_column(Integer, default=None)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    unreachable_since: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = {"sqlite_autoincrement": True}


class EnvironmentRow(Base):
    """A tenant's Python environment: desired (the inputs) and observed (the build).

    ``digest`` is the SHA-256 of the inputs and names the build directory, so two
    environments with the same inputs share one build.  ``state`` is
    building | ready | failed (``reason`` says why).
    """

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))  # pip | pyproject | python
    requirements: Mapped[str] = mapped_column(Text, default="")
    python: Mapped[str] = mapped_column(String(16))
    # Built with this image's Python, for jobs over that image (NULL: the host's Python).
    image: Mapped[str | None] = mapped_column(String(63))
    digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="building")
    reason: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ready_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    tenant: Mapped[TenantRow] = relationship()

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = (UniqueConstraint("tenant_id", "name"), {"sqlite_autoincrement": True})


class DatasetRow(Base):
    """A tenant's data set: a path on a site (``site``) or on this platform's nodes (NULL).

    Jobs naming it (``jobs.data``) run only where it is, unless they ask for a copy.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(63))
    site: Mapped[str | None] = mapped_column(String(63), default=None)
    path: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    tenant: Mapped[TenantRow] = relationship()
    copies: Mapped[list[DatasetCopyRow]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True
    )

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = (UniqueConstraint("tenant_id", "name"), {"sqlite_autoincrement": True})


class DatasetCopyRow(Base):
    """A copy of a dataset staged to a site (rsync over the site's SSH), one per site.

    ``state`` is a ``CopyState``; ``progress`` is rsync's last word on it.  A copy made
    at ``started_at`` serves the jobs submitted before then (rsync again for later ones).
    """

    __tablename__ = "dataset_copies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(63))
    path: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[str] = mapped_column(Text, default="")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    dataset: Mapped[DatasetRow] = relationship(back_populates="copies")

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = (UniqueConstraint("dataset_id", "site"), {"sqlite_autoincrement": True})


class ServiceRow(Base):
    """An inference service (``type: service``): its spec, and what the proxy saw of it.

    ``generation`` goes up when the replicas' template changes (``digest``): replicas of
    an older generation are rolled.  ``state``: ``active`` or ``deleting`` (the reconciler
    stops its replicas, then deletes the row).  ``demand_at``: a request that found no
    ready replica (a cold start); ``last_request_at``: the proxy's last request, as the
    reconciler last heard of it.
    """

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    digest: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="active")
    reason: Mapped[str] = mapped_column(Text, default="")
    desired: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_request_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    demand_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # A crash loop's back-off: replicas in a row that ended before they were ready, the
    # spec generation they were of, and when the next replica may start.  Kept here, so a
    # new leader or a restarted server waits it out instead of starting one at once.
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    crash_generation: Mapped[int | None] = mapped_column(Integer)
    retry_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    tenant: Mapped[TenantRow] = relationship()
    user: Mapped[UserRow] = relationship()
    replicas: Mapped[list[ServiceReplicaRow]] = relationship(
        back_populates="service",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ServiceReplicaRow.id",
    )

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = (UniqueConstraint("tenant_id", "name"), {"sqlite_autoincrement": True})


class ServiceReplicaRow(Base):
    """One replica of a service: a job of kind ``service``, and its readiness.

    Only ready replicas that are not draining are in the proxy's route.  A draining one
    is stopped ``services.drain_s`` later (the proxy's cached routes forget it first).
    The row goes when its job has ended; the job stays, with its usage.
    """

    __tablename__ = "service_replicas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    generation: Mapped[int] = mapped_column(Integer)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    ready_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_probe_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    probe_message: Mapped[str] = mapped_column(Text, default="")
    draining_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    service: Mapped[ServiceRow] = relationship(back_populates="replicas")
    job: Mapped[JobRow] = relationship()

    # Ids never reused, even on SQLite (migration 0031): rows go, their ids outlive them.
    __table_args__ = {"sqlite_autoincrement": True}


class ServiceEventRow(Base):
    """What happened to a service, in its operator's words: a replica started, became
    ready, was restarted, drained or ended (and why), the wanted count changed, a spec was
    applied.  The last ``store.serviceevents.KEPT`` per service are kept; they go with it."""

    __tablename__ = "service_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    message: Mapped[str] = mapped_column(Text)

    # Ids never reused (rows are trimmed and go with their service), as 0031's tables.
    __table_args__ = (
        Index("ix_service_events_service_id_id", "service_id", "id"),
        {"sqlite_autoincrement": True},
    )


class ServiceTrafficRow(Base):
    """What one server's proxy saw of one service lately (``control.servicetraffic``).

    Every server writes its own rows (``node``: its node's name) every few seconds while
    a service has traffic; the leader sums the fresh rates and takes the latest request
    of all, so requests to any server scale the service.  No foreign key: a row written
    just after its service was deleted is harmless, and the reconciler deletes the rows
    of a service it deletes.
    """

    __tablename__ = "service_traffic"

    service_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    rate: Mapped[float] = mapped_column(Float, default=0.0)  # requests/s over its window
    last_request_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
