"""The authenticated reverse proxy of ``virtuai up``: users to their notebooks (and, later,
services), on whatever node runs them (``app``: the ASGI app; ``routes``: the routing table;
``auth``: who calls)."""
