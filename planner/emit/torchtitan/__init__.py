"""torchtitan emitters: a plan to a Python recipe (torchtitan 0.3.0) or a TOML job file (0.2.x).

Two formats, one source. :func:`torchtitan_settings` turns a plan into section -> key ->
value in torchtitan's ``--section.key`` vocabulary (the JobConfig field names of v0.2.2,
which 0.3.0 keeps for nearly every field it still has). :func:`render_toml` writes them
as the v0.2.x job file; :func:`render_recipe` writes them as a 0.3.0 config function,
moving each key to its 0.3.0 home (:func:`current_home`). Current torchtitan is
configured by a Python function returning ``Trainer.Config`` (``--module``/``--config``);
TOML job files apply to v0.2.2 and earlier. Versions read: the PyPI wheels torchtitan
0.3.0 (``torchtitan/config/configs.py``, ``trainer.py``, ``models/*/config_registry.py``,
``distributed/{parallel_dims,pipeline_parallel,activation_checkpoint}.py``) and 0.2.2
(``torchtitan/config/job_config.py``, ``train.py``). ``main`` after 0.3.0 (commit
``73aed7f``, "fold batch dim") renamed the batch fields to token counts; it is not a target.

Plan -> torchtitan (both versions unless marked):

  model           ``model.name``/``flavor`` from ``TORCHTITAN_MODELS`` (catalogue name)
  zero 3 / 0      ``data_parallel_shard_degree`` = dp (FSDP) / ``data_parallel_replicate_degree``
                  = dp (DDP; 0.2.x only as the sole parallelism)
  tp, cp, pp, ep  ``tensor_/context_/pipeline_/expert_parallel_degree``
  etp (ep > 1)    0.2.x ``expert_tensor_parallel_degree`` (1 or tp); 0.3.0 has only etp 1
  cp_comm_type    0.2.x ``context_parallel_rotate_method``: p2p -> ``alltoall`` (ring),
                  all_gather -> ``allgather``; 0.3.0 always all-gathers K/V
  vpp             ``pipeline_parallel_schedule`` ``Interleaved1F1B`` (else ``1F1B``) with
                  ``pipeline_parallel_layers_per_stage`` = layers per virtual stage
  uneven stages   ``pipeline_parallel_first/last_stage_less_layers`` (0 for an even split)
  mbs, batch      pp = 1: ``local_batch_size`` = mbs and ``global_batch_size`` = the global
                  batch, so torchtitan accumulates global / (mbs x dp) micro-batches;
                  pp > 1: ``local_batch_size`` = global / dp split into
                  ``pipeline_parallel_microbatch_size`` = mbs pipeline micro-batches, no
                  accumulation (as Megatron runs them). Field docs: 0.3.0
                  ``TrainingConfig.local_batch_size`` "per data-parallel rank in one gradient
                  accumulation step. With pipeline parallelism, this is split into pipeline
                  microbatches"; ``Trainer.__init__`` sets gradient_accumulation_steps =
                  global_batch_size // (local_batch_size x dp_replicate x dp_shard).
  recompute       ``activation_checkpoint.mode`` none | selective (``selective_ac_option`` op;
                  0.3.0 ``SelectiveAC``) | full (0.3.0 ``FullAC``)
  tp_comm_overlap async TP (needs compile): 0.2.x ``parallelism.``, 0.3.0 ``compile.``
                  ``enable_async_tensor_parallel``
  precision       bf16/fp8 -> ``mixed_precision_param`` bfloat16, fp32 -> float32; fp8 adds
                  the float8 converters (rowwise, output layer skipped) and compile

Refused with ``EmitError`` naming each reason: models torchtitan does not define, Megatron's
distributed optimizer, ZeRO-1/2, fp16, optimizer offload, Ulysses CP, DDP with CP, expert
TP other than tp without EP, grouped recomputation, uneven stages with vpp or with more
layers at the ends, and the version-specific gaps above.

Modules: ``_fields`` (versions, model table, field tables), ``_settings`` (plan to
settings, refusals), ``_rules`` (torchtitan's checks restated, version gaps), ``_toml``
(the v0.2.x job file and its reader), ``_recipe`` (the 0.3.0 recipe), ``_script`` (the
launch script and the two emitters).
"""

from planner.emit.base import register
from planner.emit.torchtitan._fields import (
    CURRENT_MOVED,
    CURRENT_VERSION,
    LAUNCH_FILE,
    RECIPE_FILE,
    RECIPE_MODULE,
    TOML_FILE,
    TOML_VERSION,
    TORCHTITAN_MODELS,
    V02_ABSENT,
    V02_FIELDS,
    Settings,
    TorchtitanModel,
    current_home,
)
from planner.emit.torchtitan._recipe import recipe_function_name, render_recipe
from planner.emit.torchtitan._rules import rule_violations
from planner.emit.torchtitan._script import TorchtitanEmitter, TorchtitanTomlEmitter
from planner.emit.torchtitan._settings import torchtitan_settings
from planner.emit.torchtitan._toml import parse_toml, render_toml

register(TorchtitanEmitter())
register(TorchtitanTomlEmitter())

__all__ = [
    "CURRENT_MOVED",
    "CURRENT_VERSION",
    "LAUNCH_FILE",
    "RECIPE_FILE",
    "RECIPE_MODULE",
    "TOML_FILE",
    "TOML_VERSION",
    "TORCHTITAN_MODELS",
    "V02_ABSENT",
    "V02_FIELDS",
    "Settings",
    "TorchtitanEmitter",
    "TorchtitanModel",
    "TorchtitanTomlEmitter",
    "current_home",
    "parse_toml",
    "recipe_function_name",
    "render_recipe",
    "render_toml",
    "rule_violations",
    "torchtitan_settings",
]
