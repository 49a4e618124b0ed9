"""torchtitan 0.3.0 recipe written by autopar 0.0.0+test.

llama-3.1-8b on 8 GPUs: dp 2 (FSDP) x tp 1 x cp 1 x pp 4; micro-batch 2, 16 pipeline micro-
batches; recompute none; bf16. Launch with run_torchtitan.sh, which runs torchtitan.train
--module autopar_torchtitan --config autopar_llama_3_1_8b.
"""

import dataclasses

from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
from torchtitan.config import CompileConfig, ParallelismConfig
from torchtitan.models.common.config_utils import decoder_vocab_size
from torchtitan.models.llama3 import model_registry
from torchtitan.models.llama3.config_registry import llama3_8b
from torchtitan.trainer import Trainer


def autopar_llama_3_1_8b() -> Trainer.Config:
    # torchtitan's recipe for this model supplies dataset, optimizer and schedule
    base = llama3_8b()
    model_spec = model_registry("8B")
    return dataclasses.replace(
        base,
        model_spec=model_spec,
        hf_assets_path="./assets/hf/Llama-3.1-8B",
        loss=ChunkedLossWrapper.Config(
            loss_fn=CrossEntropyLoss.Config(
                global_vocab_size=decoder_vocab_size(model_spec),
            ),
        ),
        training=dataclasses.replace(
            base.training,
            disable_cuda_graphs=True,
            global_batch_size=64,
            local_batch_size=32,
            mixed_precision_param="bfloat16",
            seq_len=4096,
            steps=1000,
        ),
        parallelism=ParallelismConfig(
            context_parallel_degree=1,
            data_parallel_replicate_degree=1,
            data_parallel_shard_degree=2,
            expert_parallel_degree=1,
            pipeline_parallel_degree=4,
            pipeline_parallel_first_stage_less_layers=2,
            pipeline_parallel_last_stage_less_layers=2,
            pipeline_parallel_layers_per_stage=9,
            pipeline_parallel_microbatch_size=2,
            pipeline_parallel_schedule="1F1B",
            tensor_parallel_degree=1,
        ),
        activation_checkpoint=None,
        compile=CompileConfig(
            enable=False,
        ),
    )
