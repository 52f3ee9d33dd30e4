"""``python -m tilex.cli``: the same as the ``tilex`` command."""

from tilex.cli.main import main

main()
