"""The REST service: FastAPI under ``/v1`` over the planner's Python API.

``api.app.create_app`` builds the app; ``autopar serve`` starts it under uvicorn by its
import string, so ``planner`` never imports this package. Modules: ``app`` (factory and
lifetime), ``routers`` (health, catalogue, estimates, plans), ``schemas`` and
``spec_inputs`` (request and response bodies), ``inputs`` (bodies to specs, bounds,
canonical inputs), ``limits`` and ``settings`` (bounds), ``problems`` (RFC 9457 errors),
``guards`` (body size, bearer token), ``db`` and ``store`` (SQLAlchemy tables and job
states), ``jobs`` and ``worker`` (the planning process pool), ``openapi``.
"""

__all__: list[str] = []
