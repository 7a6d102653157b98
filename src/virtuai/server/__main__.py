"""``python -m virtuai.server``: what ``virtuai up`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from virtuai.server.up import run_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="virtuai up", description="Start the virtuai server.")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    run_server(host=args.host, port=args.port, database_url=args.database_url, home=args.home)


if __name__ == "__main__":
    main()
