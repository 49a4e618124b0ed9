"""``python -m planner`` runs the ``autopar`` command line."""

from planner.cli.app import main

main()
