"""Server settings: one typed class of groups, read from the environment and a YAML file.

Sources, highest first: arguments given by ``virtuai up``, environment
variables (``VIRTUAI_PORT``, nested as ``VIRTUAI_OIDC__ISSUER``), the YAML file
``$VIRTUAI_HOME/config.yaml`` (or ``VIRTUAI_CONFIG``), then defaults.
Settings are built once by the composition root and passed down; nothing
reads them at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from virtuai.domain.units import parse_duration, parse_memory


def default_home() -> Path:
    return Path(os.environ.get("VIRTUAI_HOME") or Path.home() / ".local/share/virtuai")


class DeclaredGpu(BaseModel):
    """A GPU declared in the config file, for machines without NVML.

    Declared GPUs are scheduling resources: the scheduler places jobs on them
    and jobs see their indices in ``CUDA_VISIBLE_DEVICES``; nothing checks that
    the device exists.  This is the documented device model used where no GPU
    can be present (CI, laptops).
    """

    model: str = Field(default="declared-gpu", max_length=64)
    memory: int = Field(default=16 * 2**30, description="bytes; strings like 80Gi accepted")

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> int:
        return parse_memory(value, field="gpus.memory")


class LocalDriverSettings(BaseModel):
    kill_grace_s: int = Field(default=30, ge=0, le=3600, description="SIGTERM -> SIGKILL delay")
    gpus: list[DeclaredGpu] | None = Field(
        default=None, description="declared GPUs; None = detect through NVML"
    )
    cpu: float | None = Field(default=None, gt=0, description="CPUs offered; None = all cores")
    memory: int | None = Field(default=None, description="bytes offered; None = all memory")
    pool: str = "default"
    cgroup_name: str = Field(default="virtuai", description="parent cgroup of all tasks")
    user_prefix: str = Field(default="vai-", description="prefix of per-tenant Unix users")
    max_pids: int = Field(default=4096, ge=16, description="pids limit per task")

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> int | None:
        return None if value is None else parse_memory(value, field="local.memory")


class OidcSettings(BaseModel):
    """Accept JWTs from an external OpenID Connect provider (off unless ``issuer`` is set)."""

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    # A group ``<group_prefix><tenant>:<role>`` makes its members <role> of <tenant>.
    group_prefix: str = "virtuai:"
    admin_group: str | None = "virtuai-admins"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_s: int = 30
    # Browser sign-in (authorization code + PKCE): on when issuer and client_id are set.
    client_id: str | None = Field(default=None, description="this server as an OIDC client")
    client_secret: str | None = Field(default=None, description="only for confidential clients")
    scopes: str = "openid profile email"
    authorization_endpoint: str | None = Field(default=None, description="None = discovery")
    token_endpoint: str | None = Field(default=None, description="None = discovery")


class PriorityClassSetting(BaseModel):
    name: str
    value: int
    preemptible: bool = True


class SchedulerSettings(BaseModel):
    """The scheduling policy (docs/scheduling.md explains each rule)."""

    interval_s: float = Field(default=1.0, gt=0, le=60, description="control loop period")
    priority_classes: list[PriorityClassSetting] = Field(
        default_factory=lambda: [
            PriorityClassSetting(name="low", value=100),
            PriorityClassSetting(name="normal", value=500),
            PriorityClassSetting(name="high", value=1000, preemptible=False),
        ]
    )
    fair_share: bool = Field(default=True, description="order equal priorities by fair share")
    backfill: bool = Field(default=True, description="EASY backfill behind the first blocked job")
    preemption: bool = Field(
        default=True, description="reclaim lent quota, and let priority preempt within a tenant"
    )
    borrowing: bool = Field(default=True, description="cohorts lend each other unused quota")
    half_life_s: int = Field(
        default=7 * 86400, description="fair share forgets half of past usage this often; 7d"
    )
    allocation_weight: float = Field(
        default=0.5, ge=0, le=1, description="weight of current allocation against history"
    )
    las: bool = Field(
        default=False,
        description="least attained GPU service within a tenant (Tiresias-like: short jobs "
        "first, preempting long ones of the same priority); docs/scheduling.md says when",
    )
    min_run_s: int = Field(
        default=0,
        ge=0,
        description="a job is not preempted before it ran this long (with las: at least 3600)",
    )

    @field_validator("half_life_s", mode="before")
    @classmethod
    def _parse_half_life(cls, value: Any) -> int:
        return parse_duration(value, field="scheduler.half_life_s")


class VirtualClusterSettings(BaseModel):
    """Virtual clusters (``docs/architecture.md``, "Virtual clusters").

    They need root, overlayfs, network namespaces and cgroups; without them the
    server still starts, and creating a cluster fails at once saying why.
    """

    enabled: bool = Field(default=True, description="offer virtual clusters when the host can")
    state_dir: Path | None = Field(
        default=None,
        description="images, nodes' upper layers, shared volumes; None = $home/vcs-runtime",
    )
    prefix: str = Field(
        default="vai",
        pattern=r"^[a-z][a-z0-9]{0,2}$",
        description="1-3 characters in every kernel object's name; one per installation "
        "(`virtuai doctor` treats every object with it as this server's)",
    )
    cgroup_parent: str = Field(default="virtuai-vcs", description="parent cgroup of the nodes")
    subnet_pool: str = Field(
        default="10.240.0.0/16", description="clusters' private subnets are cut from it"
    )
    subnet_prefixlen: int = Field(default=24, ge=8, le=30, description="size of each subnet")
    reconcile_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="how often the kernel objects of every cluster are checked and repaired",
    )
    stop_grace_s: float = Field(
        default=10.0, ge=0, le=3600, description="SIGTERM -> SIGKILL of what runs in a node"
    )
    exec_timeout_s: int = Field(default=3600, ge=1, description="longest `virtuai vc exec` command")


class LimitSettings(BaseModel):
    """What one request may ask for; larger is refused at once with the field named."""

    max_body: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest request body in bytes (strings like 4Mi accepted); checked "
        "before authentication and before parsing",
    )
    max_walltime_s: int = Field(default=365 * 86400, description="longest job; 365d")
    max_array_size: int = Field(default=10_000, ge=1, le=10_000, description="array elements")

    @field_validator("max_body", mode="before")
    @classmethod
    def _parse_body(cls, value: Any) -> int:
        return parse_memory(value, field="limits.max_body")

    @field_validator("max_walltime_s", mode="before")
    @classmethod
    def _parse_walltime(cls, value: Any) -> int:
        return parse_duration(value, field="limits.max_walltime_s")


class MetricsSettings(BaseModel):
    """``GET /metrics`` (Prometheus): administrators, and the users named here."""

    readers: list[str] = Field(
        default_factory=list,
        description="users who may read /metrics: give Prometheus its own user with no "
        "tenant (`virtuai user create prometheus`), whose token can read nothing else",
    )


class WebSettings(BaseModel):
    """The web dashboard's browser sessions."""

    session_ttl_s: int = Field(
        default=12 * 3600, ge=60, description="how long a browser stays signed in; 12h"
    )

    @field_validator("session_ttl_s", mode="before")
    @classmethod
    def _parse_ttl(cls, value: Any) -> int:
        return parse_duration(value, field="web.session_ttl_s")


class ClusterSettings(BaseModel):
    """Several machines on one PostgreSQL (docs/operations.md): this instance's node, and the
    timing of heartbeats, the scheduling lease and lost nodes."""

    node: str | None = Field(
        default=None, max_length=128, description="this machine's node name; None = hostname"
    )
    node_class: str = Field(default="light", pattern=r"^(light|fat|gpu)$")
    labels: dict[str, str] = Field(default_factory=dict, description="label -> value")
    address: str | None = Field(
        default=None,
        max_length=255,
        description="where other machines reach this one (MASTER_ADDR, the API); "
        "None = the listening host, or this machine's address when listening on all",
    )
    heartbeat_interval_s: float = Field(default=0.25, gt=0, le=60)
    lease_ttl_s: float = Field(
        default=1.0, gt=0, le=600, description="a leader silent this long is replaced"
    )
    node_lost_s: float = Field(
        default=10.0, gt=0, le=3600, description="a node silent this long is unreachable"
    )
    self_fence_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="a node without the database this long kills its tasks (< node_lost_s)",
    )
    max_walltime_by_class: dict[str, int] = Field(
        default_factory=dict,
        description="longest time limit of a job on a node class, e.g. {gpu: 12h} (HPC4AI)",
    )

    @field_validator("max_walltime_by_class", mode="before")
    @classmethod
    def _parse_walltimes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            str(k): parse_duration(v, field=f"cluster.max_walltime_by_class.{k}")
            for k, v in value.items()
        }


class NotebookSettings(BaseModel):
    """Notebooks (``virtuai notebook``): JupyterLab behind the proxy at ``/user/<user>/<name>/``."""

    python: Path | None = Field(
        default=None,
        description="a Python with JupyterLab installed that tenants' users can run, used by "
        "notebooks started without --env; None = each tenant's environment `notebook` "
        "(`requirements`), built from the package index on first use",
    )
    requirements: str = Field(
        default="jupyterlab", description="what the default notebook environment installs"
    )
    idle_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="a notebook with no kernel or HTTP activity this long is stopped (tenants "
        "may set their own); 1h",
    )
    cull_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="how often notebooks' activity is checked"
    )
    default_time_s: int = Field(default=8 * 3600, ge=60, description="a notebook's time limit")

    @field_validator("idle_timeout_s", "default_time_s", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> int:
        return parse_duration(value, field="notebooks")


class ServiceSettings(BaseModel):
    """Inference services (``type: service``) behind the proxy at ``/svc/<tenant>/<name>/``."""

    idle_timeout_s: int = Field(
        default=900,
        ge=1,
        description="a service with replicas.min 0 and no request this long scales to zero; 15m",
    )
    drain_s: float = Field(
        default=12.0,
        ge=0,
        le=3600,
        description="a replica taken out of the proxy is stopped this much later (longer than "
        "the proxy's route cache, 10 s, so no request is sent to a stopped replica)",
    )
    cold_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="a request to a service with no ready replica is held this long at most",
    )
    reconcile_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="how often replicas are reconciled"
    )
    scale_down_delay_s: float = Field(
        default=30.0, ge=0, description="at most one replica is removed per this period"
    )
    isolate: bool = Field(
        default=True,
        description="replicas' ports refuse every local process but the server (nftables; "
        "needs root and nft, else a warning at start)",
    )
    port_min: int = Field(
        default=30000, ge=1024, le=65535, description="lowest port of the replicas' range"
    )
    port_max: int = Field(
        default=32767,
        ge=1024,
        le=65535,
        description="highest port of the replicas' range; keep it out of the kernel's "
        "ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default)",
    )
    rate_window_s: int = Field(
        default=30, ge=1, le=60, description="the request rate is averaged over this window"
    )
    traffic_publish_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how often each server records its requests per service for the leader",
    )
    renew_before_s: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="a replica's replacement is started at least this long before the "
        "replica's time limit, and the replica drained once the replacement is ready (more "
        "when the drain and the replica's own start need it; at most half its time limit)",
    )

    @field_validator("idle_timeout_s", mode="before")
    @classmethod
    def _parse_idle(cls, value: Any) -> int:
        return parse_duration(value, field="services.idle_timeout_s")

    @model_validator(mode="after")
    def _port_range(self) -> ServiceSettings:
        if self.port_min > self.port_max:
            raise ValueError("services.port_min is above services.port_max")
        return self


class ProxySettings(BaseModel):
    """What serves ``/user/`` and ``/svc/``: virtuai's own proxy, or nginx in front of it."""

    engine: Literal["auto", "builtin", "nginx"] = Field(
        default="auto",
        description="auto = nginx if it and its Lua module are installed, else builtin (a "
        "log line at start says which and why); "
        "builtin = virtuai's own proxy; nginx = an nginx child of `virtuai up` "
        "on the public port (proxy/nginx.py), falling back to the builtin proxy for what it "
        "does not take; needs nginx on the PATH and its Lua module (Debian: nginx-light, "
        "libnginx-mod-http-lua)",
    )


class ServerSettings(BaseModel):
    """The server's own processes (``server/workers.py``)."""

    api_workers: int | Literal["auto"] = Field(
        default=1,
        description="processes serving the REST API on the server's port: 1 = the main "
        "process alone; N = N-1 more, API only (no loops, no lease); auto = one per core, "
        "at most 4, on PostgreSQL, and 1 on SQLite (its one write lock gains nothing from "
        'more writers: docs/benchmarks.md, "API worker processes")',
    )

    @field_validator("api_workers")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("server.api_workers must be between 1 and 64, or auto")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIRTUAI_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = Field(default=8642, ge=0, le=65535)
    workspaces: Path | None = Field(
        default=None,
        description="default working directories of jobs, one per tenant; None = "
        "/var/lib/virtuai/workspaces when root (tenant users must reach it), else $home/workspaces",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; None = SQLite in $VIRTUAI_HOME/virtuai.db"
    )
    local: LocalDriverSettings = Field(default_factory=LocalDriverSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    vclusters: VirtualClusterSettings = Field(default_factory=VirtualClusterSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    notebooks: NotebookSettings = Field(default_factory=NotebookSettings)
    services: ServiceSettings = Field(default_factory=ServiceSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("VIRTUAI_CONFIG") or default_home() / "config.yaml")
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=config_file),
        )

    # Paths are computed on access so that a changed ``home`` moves them all.
    @property
    def sqlite_path(self) -> Path:
        return self.home / "virtuai.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def runtime_dir(self) -> Path:
        """Per-task directories: supervisor records and logs."""
        return self.home / "tasks"

    @property
    def vc_state_dir(self) -> Path:
        """The virtual-cluster runtime's state (images, layers, shared volumes)."""
        return self.vclusters.state_dir or self.home / "vcs-runtime"

    @property
    def session_key_path(self) -> Path:
        """The key that signs browser sessions (0600); deleting it signs every browser out."""
        return self.home / "session.key"

    @property
    def workspaces_dir(self) -> Path:
        if self.workspaces is not None:
            return self.workspaces
        if os.geteuid() == 0:
            return Path("/var/lib/virtuai/workspaces")
        return self.home / "workspaces"

    def for_installation(self, installation_id: str) -> Settings:
        """These settings with every host-global name not set explicitly derived from the
        installation's id (``store.installation``): the tasks' cgroup, tenants' Unix
        users, the workspaces (as root), the virtual clusters' kernel objects and
        cgroup.  The empty id (an installation older than ids) keeps the old names."""
        if not installation_id:
            return self
        iid = installation_id
        local = self.local.model_copy(
            update={
                k: v
                for k, v in {
                    "cgroup_name": f"virtuai-{iid}",
                    "user_prefix": f"vai{iid[:4]}-",
                }.items()
                if k not in self.local.model_fields_set
            }
        )
        vclusters = self.vclusters.model_copy(
            update={
                k: v
                for k, v in {
                    # 1-3 characters in every kernel object's name: "v" and two of the id.
                    "prefix": f"v{iid[:2]}",
                    "cgroup_parent": f"virtuai-vcs-{iid}",
                }.items()
                if k not in self.vclusters.model_fields_set
            }
        )
        update: dict[str, Any] = {"local": local, "vclusters": vclusters}
        if self.workspaces is None and os.geteuid() == 0:
            update["workspaces"] = Path("/var/lib/virtuai") / iid / "workspaces"
        return self.model_copy(update=update)
