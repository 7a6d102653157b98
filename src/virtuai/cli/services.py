"""``virtuai service ...`` and the ``type: service`` documents of ``virtuai apply -f``.

A service document is checked here only for its shape (a mapping, known
fields, a command); the server checks every value and answers 422 naming the
field, which the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.output import JsonFlag

SERVICES = "/api/v1/services"
JOBS = "/api/v1/jobs"
SHELL = "/bin/sh"
SERVICE_KEYS = (
    "type",
    "tenant",
    "name",
    "command",
    "port",
    "env",
    "environment",
    "resources",
    "replicas",
    "readiness",
    "auth",
    "idle_timeout",
    "time",
    "priority",
)

NameArgument = Annotated[str, typer.Argument(help="Service name.", show_default=False)]
TenantOption = Annotated[
    str | None, typer.Option(help="Tenant (default: your only one).", show_default=False)
]


def register(app: typer.Typer, panel: str) -> None:
    service = typer.Typer(help="Inference services: `apply -f` a `type: service` document.")
    service.command("list")(list_services)
    service.command("show")(show_service)
    service.command("logs")(service_logs)
    service.command("scale")(scale_service)
    service.command("delete")(delete_service)
    app.add_typer(service, name="service", no_args_is_help=True, rich_help_panel=panel)


def service_body(spec: dict[Any, Any], problem: Callable[[str], Exception]) -> JsonObject:
    """The API body of a ``type: service`` document; ``problem(message)`` for bad shapes."""
    unknown = sorted(str(k) for k in spec if k not in SERVICE_KEYS)
    if unknown:
        raise problem(f"{unknown[0]}: unknown field; expected one of {', '.join(SERVICE_KEYS)}")
    if not isinstance(spec.get("name"), str):
        raise problem("name: missing; a service needs a name (its URL is /svc/<tenant>/<name>/)")
    command = spec.get("command")
    if isinstance(command, str) and command.strip():
        command = [SHELL, "-c", command]
    elif isinstance(command, list) and command:
        command = [str(part) if isinstance(part, int | float) else part for part in command]
    else:
        raise problem("command: missing; give a list of words, or one string run by /bin/sh -c")
    body: JsonObject = {k: v for k, v in spec.items() if v is not None}
    body["command"] = command
    return body


def apply_service(client: Client, body: JsonObject) -> JsonObject:
    return client.post_object(SERVICES, body)


def list_services(tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """Your tenants' services: replicas ready / wanted, and where they are served."""
    with Client.from_environment() as client:
        rows = client.get_list(SERVICES, {"tenant": tenant})
    if as_json:
        output.print_json(rows)
        return
    output.print_table(
        ["NAME", "TENANT", "READY", "WANTED", "REPLICAS", "AUTH", "PATH", "REASON"],
        [
            [
                str(r.get("name", "")),
                str(r.get("tenant", "")),
                str(r.get("ready", 0)),
                str(r.get("desired", 0)),
                f"{r.get('replicas_min')}-{r.get('replicas_max')}",
                str(r.get("auth", "")),
                str(r.get("path", "")),
                output.truncate(str(r.get("reason") or ""), 40) or output.NONE,
            ]
            for r in rows
        ],
    )


def show_service(
    name: NameArgument, tenant: TenantOption = None, as_json: JsonFlag = False
) -> None:
    """A service: its URL, scale, readiness, and each replica."""
    with Client.from_environment() as client:
        row = client.get_object(f"{SERVICES}/{segment(name)}", {"tenant": tenant})
    if as_json:
        output.print_json(row)
        return
    target = row.get("target_rps")
    output.print_fields(
        [
            ("Name", str(row.get("name", ""))),
            ("Tenant", str(row.get("tenant", ""))),
            ("State", str(row.get("state", ""))),
            ("URL", str(row.get("url", ""))),
            ("Auth", str(row.get("auth", ""))),
            ("Command", " ".join(str(c) for c in row.get("command") or [])),
            ("Port", str((row.get("spec") or {}).get("port") or "auto ($PORT)")),
            ("Generation", str(row.get("generation", ""))),
            (
                "Replicas",
                f"{row.get('ready', 0)} ready, {row.get('desired', 0)} wanted "
                f"(min {row.get('replicas_min')}, max {row.get('replicas_max')}"
                + (f", {target} req/s each" if target else "")
                + ")",
            ),
            ("Readiness", f"GET {row.get('readiness_path', '/')}"),
            ("Idle timeout", output.duration(row.get("idle_timeout"))),
            ("Last request", output.timestamp(row.get("last_request_at"))),
            ("Reason", str(row.get("reason") or output.NONE)),
        ]
    )
    replicas = [r for r in row.get("replicas") or [] if isinstance(r, dict)]
    if replicas:
        typer.echo("")
        output.print_table(
            ["JOB", "GEN", "STATE", "READY", "NODE", "PROBE OR REASON"],
            [
                [
                    str(r.get("job_id", "")),
                    str(r.get("generation", "")),
                    str(r.get("state", "")) + (" (draining)" if r.get("draining") else ""),
                    "yes" if r.get("ready") else "no",
                    str(r.get("node") or output.NONE),
                    output.truncate(str(r.get("probe") or r.get("reason") or ""), 50)
                    or output.NONE,
                ]
                for r in replicas
            ],
        )
    events = [e for e in row.get("events") or [] if isinstance(e, dict)]
    if events:
        typer.echo("")
        output.print_table(
            ["AT", "EVENT"],
            [[output.timestamp(e.get("at")), str(e.get("message", ""))] for e in events[-10:]],
        )


def service_logs(
    name: NameArgument,
    replica: Annotated[
        int | None,
        typer.Option(help="The replica's job id (default: the newest replica).", min=1),
    ] = None,
    tenant: TenantOption = None,
) -> None:
    """Print a replica's output (stdout to stdout, stderr to stderr)."""
    with Client.from_environment() as client:
        row = client.get_object(f"{SERVICES}/{segment(name)}", {"tenant": tenant})
        replicas = [r for r in row.get("replicas") or [] if isinstance(r, dict)]
        jobs = [int(r["job_id"]) for r in replicas]
        # The newest replica that has started: one still pending (a roll's new replica
        # waiting for room) has written nothing yet.
        started = [int(r["job_id"]) for r in replicas if r.get("state") != "pending"]
        if replica is not None:
            if replica not in jobs:
                raise typer.BadParameter(
                    f"job {replica} is not a replica of {name} now (see `virtuai service show`)",
                    param_hint="--replica",
                )
            job_id = replica
        elif started:
            job_id = max(started)
        elif jobs:
            output.echo_err(
                f"service {name}: no replica has started yet (see `virtuai service show {name}`)"
            )
            raise typer.Exit(1)
        else:
            output.echo_err(
                f"service {name} has no replica now (scaled to zero?); an ended replica's "
                "output: `virtuai logs JOB` (`virtuai jobs` lists them)"
            )
            raise typer.Exit(1)
        if len(jobs) > 1 and replica is None:
            output.echo_err(f"replica job {job_id} (--replica JOB for another: {jobs})")
        for stream in ("stdout", "stderr"):
            chunk = client.get_object(
                f"{JOBS}/{job_id}/logs", {"task": 0, "stream": stream, "offset": 0}
            )
            data = str(chunk.get("data") or "")
            if data:
                typer.echo(data, nl=False, err=stream == "stderr")


def scale_service(
    name: NameArgument,
    replicas: Annotated[
        int | None,
        typer.Option(
            help="A fixed number of replicas (min = max; 0: none until a request).",
            min=0,
            show_default=False,
        ),
    ] = None,
    min_replicas: Annotated[
        int | None,
        typer.Option("--min", help="Fewest replicas (0: scale to zero when idle).", min=0),
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option("--max", help="Most replicas.", min=1, show_default=False)
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Change how many replicas a service runs (the rest of its spec stays: no roll)."""
    given = (min_replicas, max_replicas)
    if (replicas is None) == all(v is None for v in given):
        raise typer.BadParameter("give --replicas N, or --min/--max", param_hint="--replicas")
    with Client.from_environment() as client:
        row = client.get_object(f"{SERVICES}/{segment(name)}", {"tenant": tenant})
        spec = row.get("spec")
        if not isinstance(spec, dict):
            raise typer.BadParameter(f"service {name} has no spec to change", param_hint="name")
        current = spec.get("replicas")
        wanted: JsonObject = dict(current) if isinstance(current, dict) else {}
        if replicas is not None:
            # 0: none until a request comes (a service has at least one replica at most).
            wanted = {"min": replicas, "max": max(replicas, 1)}
        if min_replicas is not None:
            wanted["min"] = min_replicas
        if max_replicas is not None:
            wanted["max"] = max_replicas
        applied = client.post_object(SERVICES, {**spec, "replicas": wanted})
    if as_json:
        output.print_json(applied)
        return
    typer.echo(
        f"service {name}: {applied.get('replicas_min')}-{applied.get('replicas_max')} replicas"
        f" ({applied.get('ready', 0)} ready now)"
    )


def delete_service(
    name: NameArgument, tenant: TenantOption = None, as_json: JsonFlag = False
) -> None:
    """Stop every replica and remove the service."""
    with Client.from_environment() as client:
        row = client.request("DELETE", f"{SERVICES}/{segment(name)}", params={"tenant": tenant})
    if as_json:
        output.print_json(row)
        return
    typer.echo(f"service {name}: deleting (its replicas are stopping)")
