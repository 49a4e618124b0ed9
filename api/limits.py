"""Bounds fixed in the OpenAPI schema: what one request may describe.

The planner accepts any size; a shared server must not let one request tie it up, so
the request schemas carry these bounds (each shows up as ``maximum`` in the schema and
is explained in the field's description). They are generous for real training runs:

* ``MAX_GPUS``: 16,384 GPUs (Llama 3 405B was trained on 16,384 H100s, Dubey et al. 2024,
  section 3.3). ``MAX_NODES`` follows from one GPU per node.
* ``MAX_GLOBAL_BATCH``: 16,384 sequences per step (Llama 3 405B used at most 2,048
  sequences of 8,192 tokens: 16M tokens).
* ``MAX_SEQ_LEN``: 1,048,576 tokens.
* ``MAX_PIPELINE_OPS``: micro-batches x pp x vpp of one estimate, the size of the
  pipeline schedule the cost model simulates. 262,144 (e.g. 4,096 micro-batches on 16
  stages with 4 virtual stages each) keeps one estimate under about half a second on
  one core (measured: about 1-2 us per scheduled operation).
* Inline model, GPU and link specs: ``MAX_LAYERS`` and the width bounds below; floats
  between a small positive floor and a ceiling far above any shipping part, so that no
  prediction overflows.

Bounds that an operator tunes (the time limit cap, the body size, the search-space size,
the queue) are :class:`api.settings.ApiSettings`.
"""

from __future__ import annotations

MAX_GPUS = 16_384
MAX_NODES = 16_384
MAX_GPUS_PER_NODE = 64
MAX_GLOBAL_BATCH = 16_384
MAX_GLOBAL_BATCH_TOKENS = MAX_GLOBAL_BATCH * (1 << 20)
MAX_SEQ_LEN = 1 << 20
MAX_PIPELINE_OPS = 1 << 18
MAX_DEGREE = 1024
MAX_MBS = 1024
MAX_TOP_K = 50
MAX_TIME_LIMIT_CEILING_S = 600.0
"""No server may allow more than this per plan job, whatever AUTOPAR_MAX_TIME_LIMIT_S says."""
MIN_TIME_LIMIT_S = 0.1
MAX_HEADROOM_GIB = 1024.0

MAX_LAYERS = 1024
MAX_WIDTH = 1 << 18
"""hidden_size, ffn_hidden_size, head_dim and the MoE/MLA widths."""
MAX_HEADS = 4096
MAX_VOCAB = 1 << 23
MAX_POSITIONS = 1 << 24
MAX_EXPERTS = 4096

MIN_HARDWARE_RATE = 1e-3
"""Floor of inline GPU/link numbers (TFLOP/s, GB/s, GiB, us): above zero, below any part."""
MAX_MEMORY_GIB = 1e5
MAX_BANDWIDTH_GBPS = 1e6
MAX_TFLOPS = 1e6
MAX_LATENCY_US = 1e6

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
"""Catalogue names and inline spec names: no paths, no spaces, nothing a shell would expand."""
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]{0,2048}$"
"""Free text (sources, display names): one line, no control characters."""
