"""The ``autopar`` command line (typer + rich): thin parsing and formatting over ``planner``."""
