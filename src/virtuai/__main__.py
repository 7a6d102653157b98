"""``python -m virtuai`` is the ``virtuai`` command (the lean entry point, see ``cli/lean.py``)."""

from virtuai.cli.lean import main

main()
