"""``virtuai tenant ...`` and ``virtuai quota ...``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.output import JsonFlag

TENANTS = "/api/v1/tenants"
RESOURCES = ("cpu", "memory", "gpu")

CpuQuota = Annotated[str | None, typer.Option("--cpu", help="CPUs (2, 0.5, 500m) or 'unlimited'.")]
MemoryQuota = Annotated[
    str | None, typer.Option("--memory", help="Memory (16Gi, 512Mi) or 'unlimited'.")
]
GpuQuota = Annotated[str | None, typer.Option("--gpu", help="GPUs, or 'unlimited'.")]


def register(app: typer.Typer, panel: str) -> None:
    tenant = typer.Typer(help="Tenants: the projects that own jobs and quotas.")
    tenant.command("create")(create_tenant)
    tenant.command("list")(list_tenants)
    tenant.command("show")(show_tenant)
    app.add_typer(tenant, name="tenant", no_args_is_help=True, rich_help_panel=panel)

    quota = typer.Typer(help="Tenants' quotas: hard limits on what they hold at once.")
    quota.command("set")(set_quota)
    quota.command("show")(show_quota)
    app.add_typer(quota, name="quota", no_args_is_help=True, rich_help_panel=panel)


def create_tenant(
    *,
    name: Annotated[str, typer.Argument(help="Tenant name (a DNS label).")],
    cpu: CpuQuota = None,
    memory: MemoryQuota = None,
    gpu: GpuQuota = None,
    weight: Annotated[float, typer.Option(help="Fair-share weight (> 0).")] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Create a tenant (admins only). Limits not given are unlimited."""
    validate.name(name, "NAME")
    if weight <= 0:
        raise typer.BadParameter("the weight must be greater than zero", param_hint="--weight")
    quota = _quota_options(cpu, memory, gpu)
    with Client.from_environment() as client:
        created = client.post_object(TENANTS, {"name": name, "quota": quota, "weight": weight})
    if as_json:
        output.print_json(created)
    else:
        typer.echo(f"tenant {created.get('name', name)} created")


def list_tenants(as_json: JsonFlag = False) -> None:
    """The tenants you can see: what each holds now against its quota."""
    with Client.from_environment() as client:
        tenants = client.get_list(TENANTS)
    if as_json:
        output.print_json(tenants)
        return
    output.print_table(
        ["NAME", "CPU", "MEMORY", "GPU", "WEIGHT", "ROLE"],
        [
            [
                str(t.get("name", "")),
                *(used_of_quota(t, resource) for resource in RESOURCES),
                f"{t.get('weight', 1):g}",
                t.get("role") or output.NONE,
            ]
            for t in tenants
        ],
    )


def show_tenant(
    name: Annotated[str, typer.Argument(help="Tenant name.")], as_json: JsonFlag = False
) -> None:
    """One tenant: its weight, your role, and its usage against its quota."""
    with Client.from_environment() as client:
        tenant = client.get_object(f"{TENANTS}/{segment(name)}")
    if as_json:
        output.print_json(tenant)
        return
    output.print_fields(
        [
            ("Name", str(tenant.get("name", name))),
            ("Weight", f"{tenant.get('weight', 1):g}"),
            ("Your role", tenant.get("role") or output.NONE),
            ("Created", output.timestamp(tenant.get("created_at"))),
        ]
    )
    typer.echo("")
    _print_quota_rows(tenant)


def set_quota(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    cpu: CpuQuota = None,
    memory: MemoryQuota = None,
    gpu: GpuQuota = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a tenant's quota; limits not given keep their current value."""
    changes = _quota_options(cpu, memory, gpu)
    if not changes:
        raise typer.BadParameter("nothing to change: give --cpu, --memory or --gpu")
    with Client.from_environment() as client:
        path = f"{TENANTS}/{segment(tenant)}"
        current = client.get_object(path).get("quota") or {}
        quota = {resource: current.get(resource) for resource in RESOURCES}
        quota.update(changes)
        updated = client.put_object(f"{path}/quota", quota)
    if as_json:
        output.print_json(updated)
        return
    _print_quota_rows(updated)


def show_quota(
    tenant: Annotated[str | None, typer.Argument(help="Tenant name; all when omitted.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Quota and current usage of one tenant, or of all you can see."""
    if tenant is None:
        with Client.from_environment() as client:
            tenants = client.get_list(TENANTS)
        if as_json:
            output.print_json(tenants)
            return
        output.print_table(
            ["TENANT", "CPU", "MEMORY", "GPU"],
            [
                [str(t.get("name", "")), *(used_of_quota(t, resource) for resource in RESOURCES)]
                for t in tenants
            ],
        )
        return
    with Client.from_environment() as client:
        one = client.get_object(f"{TENANTS}/{segment(tenant)}")
    if as_json:
        output.print_json(one)
        return
    _print_quota_rows(one)


def used_of_quota(tenant: JsonObject, resource: str) -> str:
    """``used/limit`` of one resource, ``-`` for no limit: ``2/8``, ``4Gi/16Gi``, ``0/-``."""
    used = (tenant.get("usage") or {}).get(resource)
    limit = (tenant.get("quota") or {}).get(resource)
    return f"{_quantity(resource, used or 0)}/{_quantity(resource, limit)}"


def _print_quota_rows(tenant: JsonObject) -> None:
    usage = tenant.get("usage") or {}
    quota = tenant.get("quota") or {}
    output.print_table(
        ["RESOURCE", "USED", "QUOTA"],
        [
            [
                resource,
                _quantity(resource, usage.get(resource) or 0),
                "unlimited"
                if quota.get(resource) is None
                else _quantity(resource, quota[resource]),
            ]
            for resource in RESOURCES
        ],
    )


def _quantity(resource: str, value: Any) -> str:
    if value is None:
        return output.NONE
    if resource == "memory":
        return output.memory(int(value))
    if resource == "cpu":
        return output.cpu(float(value))
    return output.count(int(value))


def _quota_options(cpu: str | None, memory: str | None, gpu: str | None) -> dict[str, Any]:
    """The limits given on the command line: the raw text, or None for 'unlimited'."""
    changes: dict[str, Any] = {}
    if cpu is not None:
        changes["cpu"] = None if validate.is_unlimited(cpu) else validate.cpu(cpu)
    if memory is not None:
        changes["memory"] = None if validate.is_unlimited(memory) else validate.memory(memory)
    if gpu is not None:
        changes["gpu"] = None if validate.is_unlimited(gpu) else validate.count(gpu, "--gpu")
    return changes
