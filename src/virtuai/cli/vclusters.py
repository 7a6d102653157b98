"""``virtuai vc ...``: virtual clusters (create, list, show, exec, suspend, resume, delete)."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from virtuai.cli import output, validate, vcexec
from virtuai.cli.client import ApiError, Client, JsonObject, segment
from virtuai.cli.config import load_connection
from virtuai.cli.output import JsonFlag

VCS = "/api/v1/vcs"
POLL_S = 0.5
SETTLED = frozenset({"running", "suspended", "deleted", "failed"})
TIMEOUT_EXIT = 124

Name = Annotated[str, typer.Argument(help="The cluster's name.", show_default=False)]
TenantOption = Annotated[
    str | None, typer.Option(help="The cluster's tenant; needed only when ambiguous.")
]
Wait = Annotated[
    bool, typer.Option("--wait", help="Wait until the cluster has settled (running, ...).")
]
WaitTimeout = Annotated[
    float, typer.Option(help="With --wait: give up after this many seconds (exit 124).", min=0)
]


def register(app: typer.Typer, panel: str) -> None:
    vc = typer.Typer(help="Virtual clusters: private nodes, network and shared storage.")
    vc.command("create")(create)
    vc.command("list")(list_vcs)
    vc.command("show")(show)
    vc.command("exec")(exec_command)
    vc.command("suspend")(suspend)
    vc.command("resume")(resume)
    vc.command("delete")(delete)
    app.add_typer(vc, name="vc", no_args_is_help=True, rich_help_panel=panel)


def create(
    *,
    name: Name,
    nodes: Annotated[int, typer.Option(help="Number of nodes.", min=1)],
    cpu_per_node: Annotated[str, typer.Option(help="CPUs per node: 2, 0.5, 500m.")] = "1",
    memory_per_node: Annotated[str, typer.Option(help="Memory per node: 512Mi, 4Gi.")] = "1Gi",
    gpu_per_node: Annotated[int, typer.Option(help="GPUs per node.", min=0)] = 0,
    image: Annotated[str, typer.Option(help="Root file system of the nodes.")] = "host",
    tenant: Annotated[str | None, typer.Option(help="Tenant; default: your only one.")] = None,
    gateway: Annotated[
        bool, typer.Option("--gateway", help="Give the nodes a route out (NAT).")
    ] = False,
    wait: Wait = False,
    timeout: WaitTimeout = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Create a virtual cluster of NODES equal nodes.

    The scheduler admits it like a gang (all nodes or none) within the tenant's
    quota; `virtuai vc show NAME` says why it waits.  Node i is NAME-i.
    """
    validate.name(name, "NAME")
    if tenant is not None:
        validate.name(tenant, "--tenant")
    validate.name(image, "--image")
    body: JsonObject = {
        "name": name,
        "nodes": nodes,
        "resources": {
            "cpu": validate.cpu(cpu_per_node, "--cpu-per-node"),
            "memory": validate.memory(memory_per_node, "--memory-per-node"),
            "gpu": gpu_per_node,
        },
        "image": image,
        "gateway": gateway,
    }
    if tenant is not None:
        body["tenant"] = tenant
    with Client.from_environment() as client:
        vc = client.post_object(VCS, body)
        if wait:
            vc = _wait(client, vc, timeout)
    _report(vc, as_json, "created")


def list_vcs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's clusters.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also deleted clusters.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List virtual clusters."""
    params = {"tenant": tenant, "all": "true" if all_ else None}
    with Client.from_environment() as client:
        vcs = client.get_list(VCS, params)
    if as_json:
        output.print_json(vcs)
        return
    output.print_table(
        ["NAME", "TENANT", "STATE", "NODES", "CPU", "MEM", "GPU", "IMAGE", "SUBNET", "REASON"],
        [
            [
                str(vc.get("name", "")),
                str(vc.get("tenant", "")),
                str(vc.get("state", "")),
                str(vc.get("node_count", "")),
                output.cpu(_resources(vc).get("cpu")),
                output.memory(_resources(vc).get("memory")),
                output.count(_resources(vc).get("gpu")),
                str(vc.get("image", "")),
                str(vc.get("subnet", "")),
                output.truncate(str(vc.get("reason", "")), 50),
            ]
            for vc in vcs
        ],
    )


def show(name: Name, tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """One virtual cluster: state and why, its nodes (hostnames, addresses, where they are
    placed), resources and history."""
    with Client.from_environment() as client:
        vc = client.get_object(_path(name), {"tenant": tenant})
    if as_json:
        output.print_json(vc)
        return
    resources = _resources(vc)
    gpus = f", {resources.get('gpu')} GPU(s)" if resources.get("gpu") else ""
    output.print_fields(
        [
            ("Name", str(vc.get("name", ""))),
            ("Tenant", str(vc.get("tenant", ""))),
            ("State", str(vc.get("state", ""))),
            ("Reason", str(vc.get("reason", "")) or output.NONE),
            ("Queue position", output.count(vc.get("queue_position"))),
            (
                "Per node",
                f"{output.cpu(resources.get('cpu'))} CPU, "
                f"{output.memory(resources.get('memory'))}{gpus}",
            ),
            ("Image", str(vc.get("image", ""))),
            ("Subnet", str(vc.get("subnet", ""))),
            ("Gateway", "yes" if vc.get("gateway") else "no"),
            ("Created", output.timestamp(vc.get("created_at"))),
            ("Observed", output.timestamp(vc.get("observed_at"))),
        ]
    )
    typer.echo("Nodes:")
    output.print_table(
        ["INDEX", "HOSTNAME", "ADDRESS", "STATE", "HOST", "GPUS", "PROBLEMS"],
        [
            [
                str(n.get("index", "")),
                str(n.get("hostname", "")),
                str(n.get("address", "")),
                str(n.get("state", "")),
                str(n.get("host") or output.NONE),
                ",".join(str(g) for g in n.get("gpu_indices") or []) or output.NONE,
                "; ".join(n.get("problems") or []) or output.NONE,
            ]
            for n in vc.get("nodes") or []
        ],
    )
    typer.echo("Events:")
    for event in vc.get("events") or []:
        typer.echo(
            f"  {output.timestamp(event.get('at'))}  {event.get('from_state') or '-':>10} -> "
            f"{event.get('to_state', '')}  {event.get('reason', '')} ({event.get('actor', '')})"
        )


def exec_command(
    *,
    name: Name,
    command: Annotated[
        list[str],
        typer.Argument(help="The command and its arguments, after `--`.", show_default=False),
    ],
    node: Annotated[int, typer.Option(help="Index of the node to run in.", min=0)] = 0,
    tenant: TenantOption = None,
    timeout: Annotated[
        int | None, typer.Option(help="Kill the command after this many seconds.", min=1)
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option("--stdin", "-i", help="Send standard input even when it is a terminal."),
    ] = False,
    tty: Annotated[
        bool, typer.Option("--tty", "-t", help="Run the command on a terminal (use with -i).")
    ] = False,
    no_stdin: Annotated[
        bool,
        typer.Option("--no-stdin", "-n", help="Send no input: the command reads EOF at once."),
    ] = False,
) -> None:
    """Run a command in a node, as the tenant's unprivileged user, in /shared.

    Options go before `--`, the command after it:
    `virtuai vc exec lab --node 1 -- hostname -f`.  Its output streams here;
    `virtuai vc exec` exits with the command's status.  Piped or redirected
    standard input goes to the command, whatever its size
    (`cat data.tar | virtuai vc exec lab -- tar x`); `-n` sends none (as `ssh -n`),
    and `-it` gives an interactive shell: `virtuai vc exec -it lab -- bash`.
    """
    if no_stdin and interactive:
        raise ApiError("-n/--no-stdin and -i/--stdin contradict each other", field="--stdin")
    fd = None if no_stdin else vcexec.stdin_fd()
    # As ssh does: input that is piped or redirected is sent; a terminal's only with -i.
    send = fd is not None and (interactive or not os.isatty(fd))
    call = vcexec.ExecCall(
        name=name, command=list(command), node=node, tenant=tenant, timeout=timeout,
        stdin=fd if send else None, tty=tty,
    )  # fmt: skip
    code, message = vcexec.run(load_connection(), call)
    if message:
        output.echo_err(f"virtuai: {message}")
    raise typer.Exit(code)


def suspend(
    name: Name, tenant: TenantOption = None, wait: Wait = False, timeout: WaitTimeout = 300.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Suspend a cluster: its jobs are preempted (checkpoint signal, requeued), its nodes
    stop with their disks kept, and its resources go back to the pool."""
    _act("POST", f"{_path(name)}/suspend", tenant, wait, timeout, as_json, "suspend requested")


def resume(
    name: Name, tenant: TenantOption = None, wait: Wait = False, timeout: WaitTimeout = 300.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Resume a suspended cluster: once admitted again (maybe onto other CPUs and GPUs) its
    nodes start with their disks as they were, and its requeued jobs restart."""
    _act("POST", f"{_path(name)}/resume", tenant, wait, timeout, as_json, "resume requested")


def delete(
    name: Name, tenant: TenantOption = None, wait: Wait = False, timeout: WaitTimeout = 300.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Delete a cluster: its jobs are cancelled, its nodes, network and disks removed."""
    _act("DELETE", _path(name), tenant, wait, timeout, as_json, "delete requested")


def _act(
    method: str,
    path: str,
    tenant: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    what: str,
) -> None:
    with Client.from_environment() as client:
        vc = client.request(method, path, params={"tenant": tenant})
        if not isinstance(vc, dict):
            raise ApiError(f"unexpected answer from the server to {path}", code="bad_response")
        if wait:
            vc = _wait(client, vc, timeout)
    _report(vc, as_json, what)


def _wait(client: Client, vc: JsonObject, timeout: float) -> JsonObject:
    """Poll until the cluster has settled (running, suspended, deleted or failed)."""
    deadline = time.monotonic() + timeout
    params = {"tenant": vc.get("tenant")}
    path = _path(str(vc.get("name", "")))
    while vc.get("state") not in SETTLED:
        if time.monotonic() > deadline:
            output.echo_err(
                f"virtual cluster {vc.get('name')} is still {vc.get('state')}: {vc.get('reason')}"
            )
            raise typer.Exit(TIMEOUT_EXIT)
        time.sleep(POLL_S)
        vc = client.get_object(path, params)
    return vc


def _report(vc: JsonObject, as_json: bool, what: str) -> None:
    if as_json:
        output.print_json(vc)
        return
    state, reason = vc.get("state"), vc.get("reason")
    typer.echo(f"virtual cluster {vc.get('name')}: {what} ({state}: {reason})")
    if state == "failed":
        raise typer.Exit(1)


def _path(name: str) -> str:
    return f"{VCS}/{segment(name)}"


def _resources(vc: JsonObject) -> dict[str, Any]:
    resources = vc.get("resources")
    return resources if isinstance(resources, dict) else {}
