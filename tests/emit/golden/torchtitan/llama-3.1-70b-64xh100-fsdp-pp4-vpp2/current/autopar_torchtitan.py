"""torchtitan 0.3.0 recipe written by autopar 0.0.0+test.

llama-3.1-70b on 64 GPUs: dp 2 (FSDP) x tp 8 x cp 1 x pp 4 (vpp 2); micro-batch 1, 256
pipeline micro-batches; recompute selective; bf16. Launch with run_torchtitan.sh, which runs
torchtitan.train --module autopar_torchtitan --config autopar_llama_3_1_70b.
"""

import dataclasses

from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
from torchtitan.config import CompileConfig, ParallelismConfig
from torchtitan.distributed.activation_checkpoint import SelectiveAC
from torchtitan.models.common.config_utils import decoder_vocab_size
from torchtitan.models.llama3 import model_registry
from torchtitan.models.llama3.config_registry import llama3_70b
from torchtitan.trainer import Trainer


def autopar_llama_3_1_70b() -> Trainer.Config:
    # torchtitan's recipe for this model supplies dataset, optimizer and schedule
    base = llama3_70b()
    model_spec = model_registry("70B")
    return dataclasses.replace(
        base,
        model_spec=model_spec,
        hf_assets_path="./assets/hf/Llama-3.1-70B",
        loss=ChunkedLossWrapper.Config(
            loss_fn=CrossEntropyLoss.Config(
                global_vocab_size=decoder_vocab_size(model_spec),
            ),
        ),
        training=dataclasses.replace(
            base.training,
            disable_cuda_graphs=True,
            global_batch_size=512,
            local_batch_size=256,
            mixed_precision_param="bfloat16",
            seq_len=8192,
            steps=1000,
        ),
        parallelism=ParallelismConfig(
            context_parallel_degree=1,
            data_parallel_replicate_degree=1,
            data_parallel_shard_degree=2,
            expert_parallel_degree=1,
            pipeline_parallel_degree=4,
            pipeline_parallel_first_stage_less_layers=0,
            pipeline_parallel_last_stage_less_layers=0,
            pipeline_parallel_layers_per_stage=10,
            pipeline_parallel_microbatch_size=1,
            pipeline_parallel_schedule="Interleaved1F1B",
            tensor_parallel_degree=8,
        ),
        activation_checkpoint=SelectiveAC.Config(),
        compile=CompileConfig(
            enable=False,
        ),
    )
