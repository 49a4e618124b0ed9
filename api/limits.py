"""The input limits of :mod:`planner.specs.limits`, under the name the routers import.

The planner's specs enforce them, so the command line and the service refuse the same
inputs; the request schemas repeat them as ``maximum`` so that clients see them.
"""

from planner.specs.limits import *  # noqa: F403
