"""``virtuai nodes``: where work runs, what each node offers and what is taken."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag

NODES = "/api/v1/nodes"


def register(app: typer.Typer, panel: str) -> None:
    app.command("nodes", rich_help_panel=panel)(nodes)
    group = typer.Typer(help="Machines: list, cordon, drain, uncordon.", no_args_is_help=True)
    group.command("list")(node_list)
    group.command("cordon")(cordon)
    group.command("drain")(drain)
    group.command("uncordon")(uncordon)
    app.add_typer(group, name="node", rich_help_panel=panel)


def node_list(as_json: JsonFlag = False) -> None:
    """Nodes: class, labels, capacity, allocated, heartbeat age, state, and who leads."""
    with Client.from_environment() as client:
        found = client.get_list(NODES)
    if as_json:
        output.print_json(found)
        return
    output.print_table(
        ["NAME", "CLASS", "LABELS", "CPU", "MEMORY", "GPU", "HEARTBEAT", "STATE", "LEADER"],
        [
            [
                str(node.get("name", "")),
                str(node.get("class", "")),
                _labels(node) or output.NONE,
                *_allocated_of_capacity(node),
                _age(node.get("heartbeat_age_s")),
                str(node.get("state", "")),
                "*" if node.get("leader") else "",
            ]
            for node in found
        ],
    )


NodeName = Annotated[str, typer.Argument(help="The node's name (`virtuai node list`).")]


def cordon(name: NodeName) -> None:
    """No new work on NAME; what runs there goes on (administrators)."""
    _act(name, "cordon", None)


def drain(
    name: NodeName,
    requeue: Annotated[
        bool,
        typer.Option(help="Requeue running jobs now (checkpoint signal, grace); else wait."),
    ] = False,
) -> None:
    """No new work on NAME; its running jobs end, or are requeued (administrators)."""
    _act(name, "drain", {"requeue": requeue})


def uncordon(name: NodeName) -> None:
    """NAME takes new work again (administrators)."""
    _act(name, "uncordon", None)


def _act(name: str, action: str, body: JsonObject | None) -> None:
    with Client.from_environment() as client:
        node = client.post_object(f"{NODES}/{quote(name, safe='')}/{action}", body)
    typer.echo(f"node {node.get('name', name)}: {node.get('state', '?')}")


def _labels(node: JsonObject) -> str:
    labels = node.get("labels") or {}
    return ",".join(f"{k}={v}" if v else str(k) for k, v in sorted(labels.items()))


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return output.NONE
    return f"{seconds:.0f}s" if seconds < 120 else output.duration(float(seconds))


def nodes(as_json: JsonFlag = False) -> None:
    """Nodes with their allocated / total CPUs, memory and GPUs."""
    with Client.from_environment() as client:
        found = client.get_list(NODES)
    if as_json:
        output.print_json(found)
        return
    output.print_table(
        ["NAME", "SITE", "POOL", "CPU", "MEMORY", "GPU", "GPU MODELS", "UPDATED"],
        [
            [
                str(node.get("name", "")),
                str(node.get("site", "")),
                str(node.get("pool", "")),
                *_allocated_of_capacity(node),
                _gpu_models(node) or output.NONE,
                output.timestamp(node.get("updated_at")),
            ]
            for node in found
        ],
    )


def _allocated_of_capacity(node: JsonObject) -> list[str]:
    """``alloc/capacity`` of CPU, memory and GPUs: ``2/16``, ``4Gi/62Gi``, ``1/2``."""
    alloc = node.get("allocated") or {}
    cap = node.get("capacity") or {}
    return [
        f"{output.cpu(alloc.get('cpu', 0))}/{output.cpu(cap.get('cpu'))}",
        f"{output.memory_approx(alloc.get('memory', 0))}/{output.memory_approx(cap.get('memory'))}",
        f"{output.count(alloc.get('gpu', 0))}/{output.count(cap.get('gpu'))}",
    ]


def _gpu_models(node: JsonObject) -> str:
    """``2x A100-80GB`` per distinct model."""
    counts: dict[str, int] = {}
    for gpu in node.get("gpus") or []:
        if isinstance(gpu, dict):
            model = str(gpu.get("model", "?"))
            counts[model] = counts.get(model, 0) + 1
    return ", ".join(f"{n}x {model}" for model, n in counts.items())
