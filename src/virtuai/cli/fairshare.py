"""``virtuai fairshare``: each tenant's standing, like Slurm's ``sshare``."""

from __future__ import annotations

import typer

from virtuai.cli import output
from virtuai.cli.client import Client
from virtuai.cli.output import JsonFlag

FAIRSHARE = "/api/v1/fairshare"


def register(app: typer.Typer, panel: str) -> None:
    app.command("fairshare", rich_help_panel=panel)(fairshare)


def fairshare(as_json: JsonFlag = False) -> None:
    """Weight, decayed usage, share of the cluster and the resulting fair-share factor.

    Jobs of equal priority go in order of their tenant's factor (higher first);
    past usage counts less and less with the scheduler's half-life.
    """
    with Client.from_environment() as client:
        rows = client.get_list(FAIRSHARE)
    if as_json:
        output.print_json(rows)
        return
    output.print_table(
        ["TENANT", "WEIGHT", "NORM SHARES", "CPU-H", "GPU-H", "MEM-GIB-H", "USAGE", "FACTOR"],
        [
            [
                str(row.get("tenant", "")),
                f"{float(row.get('weight') or 0):g}",
                f"{float(row.get('norm_shares') or 0):.3f}",
                f"{float((row.get('decayed_usage') or {}).get('cpu_hours') or 0):.2f}",
                f"{float((row.get('decayed_usage') or {}).get('gpu_hours') or 0):.2f}",
                f"{float((row.get('decayed_usage') or {}).get('memory_gib_hours') or 0):.2f}",
                f"{float(row.get('usage') or 0):.3f}"
                + (f" ({row['dominant']})" if row.get("dominant") else ""),
                f"{float(row.get('factor') or 0):.3f}",
            ]
            for row in rows
        ],
    )
