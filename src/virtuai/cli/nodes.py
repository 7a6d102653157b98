"""``virtuai nodes``: where work runs, what each node offers and what is taken."""

from __future__ import annotations

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag

NODES = "/api/v1/nodes"


def register(app: typer.Typer, panel: str) -> None:
    app.command("nodes", rich_help_panel=panel)(nodes)


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
