"""WorkloadSpec: how much is trained per step, in which precision, with which optimizer.

The global batch is given either in sequences (``global_batch``) or in tokens
(``global_batch_tokens``, which must be a whole number of sequences); the other is derived.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from planner.specs import limits as L
from planner.specs._base import Spec

Precision = Literal["bf16", "fp16", "fp8", "fp32"]
StateDtype = Literal["fp32", "bf16", "fp16"]

BYTES_PER_DTYPE: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


class OptimizerSpec(Spec):
    """The optimizer and the data types it keeps.

    Defaults are Megatron-LM's mixed-precision Adam (Rajbhandari et al. 2020, section 3.1:
    fp32 master weights and two fp32 moments; Megatron keeps fp32 main gradients).
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    state_dtype: StateDtype = Field(default="fp32", description="dtype of the moments")
    master_weights: bool = Field(
        default=True, description="an fp32 copy of the weights (mixed precision)"
    )
    grad_dtype: StateDtype = Field(default="fp32", description="dtype of accumulated gradients")

    @property
    def moments(self) -> int:
        """Tensors of state per parameter: Adam keeps two, SGD with momentum one."""
        return 2 if self.name in ("adam", "adamw") else 1


class WorkloadSpec(Spec):
    """Sequence length, global batch, precision and optimizer of a training run."""

    seq_len: PositiveInt = Field(le=L.MAX_SEQ_LEN, description="tokens per sequence")
    global_batch: PositiveInt | None = Field(
        default=None, le=L.MAX_GLOBAL_BATCH, description="sequences per step"
    )
    global_batch_tokens: PositiveInt | None = Field(
        default=None,
        le=L.MAX_GLOBAL_BATCH_TOKENS,
        description=f"tokens per step; at most {L.MAX_GLOBAL_BATCH} sequences",
    )
    precision: Precision = "bf16"
    optimizer: OptimizerSpec = OptimizerSpec()

    @model_validator(mode="after")
    def _check_batch(self) -> WorkloadSpec:
        if self.global_batch is None and self.global_batch_tokens is None:
            raise ValueError("give global_batch (sequences) or global_batch_tokens")
        if self.global_batch_tokens is not None:
            if self.global_batch_tokens % self.seq_len != 0:
                raise ValueError(
                    f"global_batch_tokens ({self.global_batch_tokens}) must be a multiple of "
                    f"seq_len ({self.seq_len})"
                )
            sequences = self.global_batch_tokens // self.seq_len
            if sequences > L.MAX_GLOBAL_BATCH:
                raise ValueError(
                    f"global_batch_tokens ({self.global_batch_tokens} = {sequences} sequences "
                    f"of {self.seq_len}) must be at most {L.MAX_GLOBAL_BATCH} sequences"
                )
            if self.global_batch is not None and self.global_batch != sequences:
                raise ValueError(
                    f"global_batch ({self.global_batch}) and global_batch_tokens "
                    f"({self.global_batch_tokens} = {sequences} x {self.seq_len}) disagree"
                )
        return self

    @property
    def sequences_per_step(self) -> int:
        if self.global_batch is not None:
            return self.global_batch
        assert self.global_batch_tokens is not None  # guaranteed by _check_batch
        return self.global_batch_tokens // self.seq_len

    @property
    def tokens_per_step(self) -> int:
        return self.sequences_per_step * self.seq_len
