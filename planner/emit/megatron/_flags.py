"""Megatron-LM's flags that autopar writes: kind, choices and where each is defined.

``MEGATRON_FLAGS`` is the table the writer (``_arguments``) and the reader (``_parser``)
both check against; ``PLACEHOLDERS`` are the values the launch script takes from its
environment; ``GROUPS`` are the script's bash arrays, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

LAUNCH_FILE = "launch_megatron.sh"
ARGS_FILE = "megatron_args.txt"
VOCAB_DIVISOR = 128  # --make-vocab-size-divisible-by default (frameworks.md 1.6)
DEFAULT_MASTER_PORT = 6000  # Megatron-LM's example scripts
PLACEHOLDERS = {  # environment variable -> (meaning, default or None when required)
    "DATA_PATH": ("Megatron-preprocessed dataset prefix (tools/preprocess_data.py)", None),
    "TOKENIZER_MODEL": ("HuggingFace tokenizer name or path", None),
    "CHECKPOINT_PATH": ("directory to save checkpoints to and resume from", None),
    "TRAIN_ITERS": ("optimizer steps to run", "1000"),
    "LR": ("peak learning rate", "3.0e-4"),
    "SAVE_INTERVAL": ("steps between checkpoints", "1000"),
}


FlagKind = Literal["switch", "int", "float", "str"]


@dataclass(frozen=True)
class MegatronFlag:
    """One Megatron-LM argument: how its value is read, and where autopar took it from."""

    kind: FlagKind
    source: str
    choices: tuple[str, ...] = ()


def _flags(
    kind: FlagKind, source: str, names: str, choices: tuple[str, ...] = ()
) -> dict[str, MegatronFlag]:
    return {f"--{name}": MegatronFlag(kind, source, choices) for name in names.split()}


_F = "frameworks.md "
_ARGS = "megatron/training/arguments.py "
MEGATRON_FLAGS: MappingProxyType[str, MegatronFlag] = MappingProxyType({
    **_flags("int", _F + "1.3", "tensor-model-parallel-size pipeline-model-parallel-size "
             "context-parallel-size expert-model-parallel-size expert-tensor-parallel-size "
             "num-virtual-stages-per-pipeline-rank decoder-first-pipeline-num-layers "
             "decoder-last-pipeline-num-layers"),
    **_flags("str", _F + "1.3 (pitfall 11)", "cp-comm-type", ("p2p", "all_gather", "a2a")),
    **_flags("switch", _F + "1.3", "sequence-parallel use-distributed-optimizer "
             "overlap-grad-reduce overlap-param-gather tp-comm-overlap"),
    **_flags("str", _F + "1.4", "recompute-granularity", ("full", "selective")),
    **_flags("str", _F + "1.4", "recompute-method", ("uniform", "block")),
    **_flags("int", _F + "1.4", "recompute-num-layers"),
    **_flags("switch", _F + "1.4", "optimizer-cpu-offload use-precision-aware-optimizer"),
    **_flags("float", _F + "1.4", "optimizer-offload-fraction"),
    **_flags("int", _F + "1.5", "micro-batch-size global-batch-size seq-length "
             "max-position-embeddings train-iters"),
    **_flags("int", _F + "1.6", "num-layers hidden-size ffn-hidden-size num-attention-heads "
             "num-query-groups kv-channels vocab-size rotary-base num-experts moe-router-topk "
             "moe-ffn-hidden-size moe-shared-expert-intermediate-size q-lora-rank kv-lora-rank "
             "qk-head-dim qk-pos-emb-head-dim v-head-dim mtp-num-layers"),
    **_flags("switch", _F + "1.6", "group-query-attention multi-latent-attention swiglu "
             "squared-relu qk-layernorm disable-bias-linear add-qkv-bias "
             "untie-embeddings-and-output-weights moe-router-enable-expert-bias "
             "moe-grouped-gemm"),
    **_flags("str", _F + "1.6", "normalization", ("LayerNorm", "RMSNorm")),
    **_flags("float", _F + "1.6", "norm-epsilon rotary-percent"),
    **_flags("str", _F + "1.6", "position-embedding-type", ("learned_absolute", "rope")),
    **_flags("str", _F + "1.6 (int or list pattern)", "moe-layer-freq"),
    **_flags("str", _F + "1.6", "moe-router-score-function", ("softmax", "sigmoid")),
    **_flags("str", _F + "1.6", "moe-token-dispatcher-type", ("alltoall",)),
    **_flags("switch", _F + "1.9 rule 40", "moe-router-pre-softmax"),
    # TransformerConfig fields (moe_shared_expert_gate, moe_expert_capacity_factor,
    # hidden_dropout, attention_dropout) turned into flags by ArgumentGroupFactory (1.1)
    **_flags("switch", _F + "1.1", "moe-shared-expert-gate"),
    **_flags("float", _F + "1.1", "moe-expert-capacity-factor hidden-dropout attention-dropout"),
    **_flags("switch", _F + "1.7", "bf16 fp16"),
    **_flags("str", _F + "1.7", "fp8-format", ("e4m3", "hybrid")),
    **_flags("str", _ARGS + "_add_data_args", "data-path"),
    **_flags("str", _ARGS + "_add_tokenizer_args", "tokenizer-model"),
    **_flags("str", _ARGS + "_add_tokenizer_args", "tokenizer-type", ("HuggingFaceTokenizer",)),
    **_flags("float", _ARGS + "_add_learning_rate_args", "lr"),
    **_flags("str", _ARGS + "_add_checkpointing_args", "save load"),
    **_flags("int", _ARGS + "_add_checkpointing_args", "save-interval"),
    **_flags("str", _ARGS + "_add_training_args", "rope-type", ("rope",)),
    **_flags("switch", _ARGS + "_add_training_args", "no-rope-fusion"),
    **_flags("int", _ARGS + "_add_logging_args", "log-interval"),
    **_flags("switch", _ARGS + "_add_logging_args", "log-throughput"),
})  # fmt: skip


GROUPS = (  # bash array name, heading
    ("MODEL_ARGS", "model"),
    ("PARALLEL_ARGS", "parallelism"),
    ("BATCH_ARGS", "batch"),
    ("PRECISION_ARGS", "precision"),
    ("OPTIMIZER_ARGS", "optimizer"),
    ("RECOMPUTE_ARGS", "recompute"),
    ("DATA_ARGS", "data, tokenizer, schedule, checkpoints, logging: yours to set"),
)
Item = tuple[str, tuple[str, ...], str]  # flag, values, comment ("" for none)
