"""Megatron-LM emitter: a plan to a ``pretrain_gpt.py`` launch script and its arguments.

Files (../shared/reference/frameworks.md section 1):

  launch_megatron.sh  bash: a header recording autopar's version, the model and the plan's
                      predictions, and every environment variable it reads; then torchrun
                      (1.2) calling ``"$MEGATRON_PATH"/pretrain_gpt.py`` with the arguments in
                      commented bash arrays (model, parallelism, batch, precision, optimizer,
                      recompute, data/logging), one flag and its value per line
  megatron_args.txt   the same arguments, one flag and its value per line, shell-quoted

``megatron_arguments(plan)`` is the argument list (argv tokens, stable order);
``parse_megatron_arguments(args)`` reads one back into ModelSpec fields and a
``ParallelConfig`` (the round trip the tests check). Placeholders the user sets (data,
tokenizer, checkpoints and their interval, iterations, learning rate) are ``$NAME`` tokens
that the script fills from its environment (``PLACEHOLDERS``).

Every flag written is in ``MEGATRON_FLAGS``: model, layout, batch and precision flags from
frameworks.md 1.3-1.7 (Megatron-LM main ``d98e8a64``), the data/logging ones and
``--rope-type``/``--no-rope-fusion`` from ``megatron/training/arguments.py``. The tests
check all of them against the argument parser and ``validate_args`` of Megatron-LM
``core_v0.16.1`` where a checkout is available. MLA models get ``--rope-type rope`` (the
spec has no RoPE scaling; Megatron's MLA would default to YaRN) and ``--no-rope-fusion``
(Megatron's fused MLA RoPE is YaRN-only).

What Megatron cannot express is refused with ``EmitError`` naming it, never changed
silently: ZeRO-2/3 and plans made for another framework, GeGLU (``--quick-geglu`` is a
different activation) and plain ReLU MLPs, ALiBi, learned-position offsets, sliding-window
attention, parallel residuals, shared or extra norms, bias patterns other than "all",
"none" or "QKV only", ``a2a+p2p`` context parallelism (needs group sizes the plan does not
choose) and optimizer offload without the distributed optimizer.

Modules: ``_flags`` (the flag table, placeholders, script groups), ``_refusals`` (what
cannot be expressed), ``_arguments`` (the argument builder), ``_parser`` (the reader, its
inverse), ``_script`` (the launch script, the arguments file and the emitter). The writer
and the reader both check against the one flag table, so they change together.
"""

from planner.emit.base import register
from planner.emit.megatron._arguments import megatron_arguments
from planner.emit.megatron._flags import (
    ARGS_FILE,
    LAUNCH_FILE,
    MEGATRON_FLAGS,
    PLACEHOLDERS,
    MegatronFlag,
)
from planner.emit.megatron._parser import megatron_flag_values, parse_megatron_arguments
from planner.emit.megatron._script import MegatronEmitter

register(MegatronEmitter())

__all__ = [
    "ARGS_FILE",
    "LAUNCH_FILE",
    "MEGATRON_FLAGS",
    "PLACEHOLDERS",
    "MegatronEmitter",
    "MegatronFlag",
    "megatron_arguments",
    "megatron_flag_values",
    "parse_megatron_arguments",
]
