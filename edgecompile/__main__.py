"""``python -m edgecompile`` is the ``edgecompile`` command."""

from edgecompile.cli import main

main()
