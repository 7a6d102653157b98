"""``virtuai tenant ...`` and ``virtuai quota ...``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtuai.cli import accounts, output, validate
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.output import JsonFlag
from virtuai.domain.notebooks import culled_reason

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
    tenant.command("set")(update_tenant)
    accounts.add_tenant_commands(tenant)
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
    cohort: Annotated[
        str | None, typer.Option(help="Cohort: tenants that lend each other unused quota.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a tenant (admins only). Limits not given are unlimited."""
    validate.name(name, "NAME")
    if cohort is not None:
        validate.name(cohort, "--cohort")
    if weight <= 0:
        raise typer.BadParameter("the weight must be greater than zero", param_hint="--weight")
    quota = _quota_options(cpu, memory, gpu)
    body: dict[str, Any] = {"name": name, "quota": quota, "weight": weight}
    if cohort is not None:
        body["cohort"] = cohort
    with Client.from_environment() as client:
        created = client.post_object(TENANTS, body)
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


def update_tenant(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    weight: Annotated[float | None, typer.Option(help="Fair-share weight (> 0).")] = None,
    cohort: Annotated[str | None, typer.Option(help="Join this cohort.")] = None,
    leave_cohort: Annotated[bool, typer.Option(help="Leave its cohort.")] = False,
    notebook_idle_timeout: Annotated[
        str | None, typer.Option(help="Stop its notebooks after this long idle, e.g. 30m.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a tenant's fair-share weight, cohort or notebook idle timeout (admins only)."""
    if weight is None and cohort is None and not leave_cohort and notebook_idle_timeout is None:
        raise typer.BadParameter(
            "nothing to change: give --weight, --cohort, --leave-cohort or --notebook-idle-timeout"
        )
    body = {
        "weight": weight,
        "cohort": cohort,
        "leave_cohort": leave_cohort,
        "notebook_idle_timeout": notebook_idle_timeout,
    }
    with Client.from_environment() as client:
        updated = client.request("PATCH", f"{TENANTS}/{segment(name)}", body=body)
    if as_json:
        output.print_json(updated)
    else:
        cohort_text = updated.get("cohort") or output.NONE
        said = f"tenant {name}: weight {updated.get('weight', 1):g}, cohort {cohort_text}"
        idle = updated.get("notebook_idle_timeout")
        if isinstance(idle, int | float):
            said += f", notebooks {culled_reason(idle)}"
        typer.echo(said)


def set_quota(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    cpu: CpuQuota = None,
    memory: MemoryQuota = None,
    gpu: GpuQuota = None,
    pool: Annotated[str, typer.Option(help="Pool of nodes, or * for all pools.")] = "*",
    borrowing_cpu: Annotated[
        str | None, typer.Option(help="May borrow this much more CPU.")
    ] = None,
    borrowing_memory: Annotated[str | None, typer.Option(help="... memory.")] = None,
    borrowing_gpu: Annotated[str | None, typer.Option(help="... GPUs.")] = None,
    lending_cpu: Annotated[str | None, typer.Option(help="Lends at most this much CPU.")] = None,
    lending_memory: Annotated[str | None, typer.Option(help="... memory.")] = None,
    lending_gpu: Annotated[str | None, typer.Option(help="... GPUs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a tenant's quota in a pool; limits not given keep their current value.

    Nominal limits (--cpu, --memory, --gpu) are guaranteed; in a cohort a tenant may
    borrow unused quota of the others up to its borrowing limits, and lends its own
    up to its lending limits.  'unlimited' removes a limit.
    """
    nominal = _quota_options(cpu, memory, gpu)
    borrowing = _quota_options(borrowing_cpu, borrowing_memory, borrowing_gpu)
    lending = _quota_options(lending_cpu, lending_memory, lending_gpu)
    if not (nominal or borrowing or lending):
        raise typer.BadParameter("nothing to change: give --cpu, --memory, --gpu or limits")
    with Client.from_environment() as client:
        path = f"{TENANTS}/{segment(tenant)}"
        entries = client.get_object(path).get("quotas") or []
        current: JsonObject = next((q for q in entries if q.get("pool") == pool), {})
        body: dict[str, Any] = {"pool": pool}
        body.update(_merged(current.get("nominal"), nominal))
        body["borrowing"] = _merged(current.get("borrowing_limit"), borrowing)
        body["lending"] = _merged(current.get("lending_limit"), lending)
        updated = client.put_object(f"{path}/quota", body)
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
    """Per pool and resource: nominal, limits, used, borrowed from and lent to the cohort."""
    rows = []
    for entry in tenant.get("quotas") or []:
        for resource in RESOURCES:
            rows.append(
                [
                    str(entry.get("pool", "*")),
                    resource,
                    *(
                        _limit(resource, (entry.get(part) or {}).get(resource))
                        for part in ("nominal", "borrowing_limit", "lending_limit")
                    ),
                    *(
                        _quantity(resource, (entry.get(part) or {}).get(resource) or 0)
                        for part in ("used", "borrowed", "lent")
                    ),
                ]
            )
    output.print_table(
        ["POOL", "RESOURCE", "NOMINAL", "BORROW LIMIT", "LEND LIMIT", "USED", "BORROWED", "LENT"],
        rows,
    )


def _limit(resource: str, value: Any) -> str:
    return "unlimited" if value is None else _quantity(resource, value)


def _merged(current: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """The limits of one part of a quota entry, with the command line's changes applied."""
    merged = {resource: (current or {}).get(resource) for resource in RESOURCES}
    merged.update(changes)
    return merged


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
