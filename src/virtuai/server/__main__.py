"""``python -m virtuai.server``: what ``virtuai up`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from virtuai.domain.cluster import parse_labels
from virtuai.server.start import run_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="virtuai up", description="Start the virtuai server.")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--node")
    parser.add_argument("--class", dest="node_class", choices=["light", "fat", "gpu"])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--address")
    parser.add_argument("--proxy-engine", choices=["auto", "builtin", "nginx"])
    parser.add_argument("--api-workers")
    args = parser.parse_args()
    run_server(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        home=args.home,
        node=args.node,
        node_class=args.node_class,
        labels=parse_labels(args.label, field="label") if args.label else None,
        address=args.address,
        proxy_engine=args.proxy_engine,
        api_workers=args.api_workers,
    )


if __name__ == "__main__":
    main()
