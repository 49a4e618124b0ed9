"""OR-Tools formulations of autopar's optimisation problems (planned by later issues).

Each module will be a pure function from a frozen problem to a frozen solution, with a
brute-force reference; see ../DESIGN.md, "Solvers". Nothing here imports ``planner``.
"""

__all__: list[str] = []
