"""``python -m virtuai`` is the ``virtuai`` command."""

from virtuai.cli.main import main

main()
