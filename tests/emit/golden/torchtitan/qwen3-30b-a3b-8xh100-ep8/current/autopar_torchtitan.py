"""torchtitan 0.3.0 recipe written by autopar 0.0.0+test.

qwen3-30b-a3b on 8 GPUs: dp 8 (FSDP) x tp 1 x cp 1 x pp 1, ep 8; micro-batch 1, gradient
accumulation 8; recompute full; bf16. Launch with run_torchtitan.sh, which runs
torchtitan.train --module autopar_torchtitan --config autopar_qwen3_30b_a3b.
"""

import dataclasses

from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
from torchtitan.config import CompileConfig, ParallelismConfig
from torchtitan.distributed.activation_checkpoint import FullAC
from torchtitan.models.common.config_utils import decoder_vocab_size
from torchtitan.models.qwen3 import model_registry
from torchtitan.models.qwen3.config_registry import qwen3_30b_a3b
from torchtitan.trainer import Trainer


def autopar_qwen3_30b_a3b() -> Trainer.Config:
    # torchtitan's recipe for this model supplies dataset, optimizer and schedule
    base = qwen3_30b_a3b()
    model_spec = model_registry("30B-A3B")
    return dataclasses.replace(
        base,
        model_spec=model_spec,
        hf_assets_path="./assets/hf/Qwen3-30B-A3B",
        loss=ChunkedLossWrapper.Config(
            loss_fn=CrossEntropyLoss.Config(
                global_vocab_size=decoder_vocab_size(model_spec),
            ),
        ),
        training=dataclasses.replace(
            base.training,
            disable_cuda_graphs=True,
            global_batch_size=64,
            local_batch_size=1,
            mixed_precision_param="bfloat16",
            seq_len=4096,
            steps=1000,
        ),
        parallelism=ParallelismConfig(
            context_parallel_degree=1,
            data_parallel_replicate_degree=1,
            data_parallel_shard_degree=8,
            expert_parallel_degree=8,
            pipeline_parallel_degree=1,
            tensor_parallel_degree=1,
        ),
        activation_checkpoint=FullAC.Config(),
        compile=CompileConfig(
            enable=False,
        ),
    )
