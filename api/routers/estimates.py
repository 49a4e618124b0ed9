"""``POST /v1/estimate``: one layout's predictions, synchronously (``autopar estimate --json``).

An estimate takes a few milliseconds of CPU (bounded by :mod:`api.limits`), so it runs in
a worker thread rather than as a job, but at most ``ESTIMATE_THREADS`` at a time: with
the GIL more threads add no throughput, and interleaving dozens of CPU-bound requests
would make every one of them as slow as the last (first come, first served keeps the
median low under load).
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response

from api.deps import ModelsDep
from api.inputs import run_estimate
from api.openapi import errors
from api.schemas import EstimateRequest
from planner.predict import Estimate

router = APIRouter(tags=["estimates"])

ESTIMATE_THREADS = 2


def _limiter(request: Request) -> anyio.CapacityLimiter:
    """One limiter per app, made on first use (it belongs to the running event loop)."""
    state = request.app.state
    if getattr(state, "estimate_limiter", None) is None:
        state.estimate_limiter = anyio.CapacityLimiter(ESTIMATE_THREADS)
    return state.estimate_limiter


@router.post("/estimate", response_model=Estimate, responses=errors(404, 413, 422))
async def post_estimate(
    body: EstimateRequest,
    models: ModelsDep,
    limiter: Annotated[anyio.CapacityLimiter, Depends(_limiter)],
) -> Response:
    """Memory per pipeline stage, step time, tokens/s and MFU of one layout."""
    result = await anyio.to_thread.run_sync(run_estimate, body, models, limiter=limiter)
    # already an Estimate: serialize it once, without FastAPI validating it again
    return Response(result.model_dump_json(), media_type="application/json")
