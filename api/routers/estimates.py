"""``POST /v1/estimate``: one layout's predictions, synchronously (``autopar estimate --json``).

An estimate is CPU work, bounded by :mod:`api.limits`: from 0.2 ms to about 60 ms for
the largest pipeline schedule allowed (measured: Llama 3.1 8B on 8 GPUs with pp 8, vpp 4
and 8,192 micro-batches, 262,144 ops, 64 ms). Where it runs:

* Up to ``INLINE_PIPELINE_OPS`` micro-batches x pp x vpp, on the event loop itself. Any
  hand-off costs more than such an estimate. A worker thread and the loop trade the GIL
  for every request (under ``benchmarks/service_load.py`` on 2 cores: 1.12 ms of server
  CPU per estimate through a thread, 0.79 ms on the loop). And once the loop is saturated
  it serves the requests in rounds (one round: every connection's request, about 0.2 s
  at 256 in flight), and every hand-off and answer waits for the next round: estimates
  sent to a thread or another process took 0.6-2.6 s there while the median was 0.2 s.
  An estimate run on the loop delays the others once, by its own few milliseconds. They
  run one after another in the order they arrived (:mod:`api.inline`).
* Larger ones, in the estimate process (:mod:`api.estimator`), so that the loop does not
  stop for tens of milliseconds. Where the server has none
  (``AUTOPAR_ESTIMATE_PROCESSES=0``) they run in a worker thread, at most
  ``ESTIMATE_THREADS`` at a time.
* With ``memplan`` (seconds per stage: the allocator simulation and the placement solve),
  in a worker thread, at most ``ESTIMATE_THREADS`` at a time, so that neither the loop
  nor the estimate process waits for it.
* A request naming an imported model (one outside the catalogue) is resolved in a worker
  thread, since that reads the database.

A plain request (a JSON body that validates, a catalogue model, a schedule for the loop)
is answered before it reaches this route, by :mod:`api.fastpath`, with the same code
and the same answer; this route answers everything else, and documents the endpoint.
The route reads ``app.state`` itself rather than through FastAPI dependencies: without
them (and without the token check where the server sets no token) FastAPI's own CPU per
estimate request fell from 0.14 to 0.10 ms (measured in-process, the estimate stubbed
out).
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from starlette.datastructures import State

from api.estimator import EstimateProcess, estimate_json
from api.inline import InlineEstimates
from api.inputs import needs_store, prepare_estimate
from api.openapi import errors
from api.schemas import EstimateRequest
from api.store import ModelStore
from planner.predict import Estimate

router = APIRouter(tags=["estimates"])

ESTIMATE_THREADS = 2
INLINE_PIPELINE_OPS = 16_384
"""Largest schedule estimated on the event loop: micro-batches x pp x vpp. Measured on
Llama 3.1 8B / 8 H100s: 8,192 (pp 4, vpp 2, 1,024 micro-batches) 2.9 ms, 32,768 5.3 ms,
131,072 (pp 8) 16.6 ms; so at most about 10 ms of the loop."""


def _limiter(state: State) -> anyio.CapacityLimiter:
    """One limiter per app, made on first use (it belongs to the running event loop)."""
    if getattr(state, "estimate_limiter", None) is None:
        state.estimate_limiter = anyio.CapacityLimiter(ESTIMATE_THREADS)
    return state.estimate_limiter


@router.post("/estimate", response_model=Estimate, responses=errors(404, 413, 422))
async def post_estimate(body: EstimateRequest, request: Request) -> Response:
    """Memory per pipeline stage, step time, tokens/s and MFU of one layout."""
    state = request.app.state  # not through dependencies (module docstring)
    models: ModelStore = state.models
    if needs_store(body):  # reads the database: not on the loop
        call = await anyio.to_thread.run_sync(
            prepare_estimate, body, models, limiter=_limiter(state)
        )
    else:
        call = prepare_estimate(body, models)
    pool: EstimateProcess | None = state.estimator
    if body.memplan:  # seconds of allocator simulation and placement: never on the loop
        text = await anyio.to_thread.run_sync(estimate_json, call, limiter=_limiter(state))
    elif call.pipeline_ops <= INLINE_PIPELINE_OPS:
        inline: InlineEstimates = state.inline
        text = await inline.run(estimate_json, call)
    elif pool is not None:
        text = await pool.run(call)
    else:
        text = await anyio.to_thread.run_sync(estimate_json, call, limiter=_limiter(state))
    # already an Estimate's JSON: sent as it is, without FastAPI validating it again
    return Response(text, media_type="application/json")
