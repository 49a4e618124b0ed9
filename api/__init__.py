"""The REST service (FastAPI) over ``planner``; built by the REST-service issue.

``planner`` never imports this package; ``autopar serve`` will start it by import string.
"""

__all__: list[str] = []
