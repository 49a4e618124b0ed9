"""The four built-in framework profiles: Megatron-LM, DeepSpeed, torchtitan, plain PyTorch.

Each declaration is what the framework's argument validation, config schema or launcher
accepts at the version autopar's emitter targets (Megatron-LM ``core_v0.16.1``,
DeepSpeed 0.19.6, torchtitan 0.3.0 and the 0.2.2 TOML release), and what autopar's cost
model assumes about its memory and kernels (``planner.cost.frameworks``). ``pytorch`` is
the eager-PyTorch program the cost model is measured against (``benchmarks/measure``);
it has no emitter, and the search gives it every axis.
"""

from __future__ import annotations

from planner.frameworks.profile import FrameworkProfile, register
from planner.frameworks.refusals import (
    TORCHTITAN_CURRENT_RELEASE,
    TORCHTITAN_TOML_RELEASE,
    deepspeed_rules,
    megatron_rules,
    torchtitan_rules,
)

MEGATRON = register(
    FrameworkProfile(
        name="megatron",
        description="Megatron-LM with Transformer Engine (pretrain_gpt.py)",
        state_layout="megatron",
        optimizer_impl="fused",  # Transformer Engine / Apex FusedAdam (multi-tensor apply)
        fused_kernels=True,
        allocator_pattern="contiguous-grad-buffer",
        axes=frozenset({"tp", "cp", "pp", "ep", "sequence_parallel"}),
        schedules=("1f1b", "interleaved-1f1b"),
        uneven_stages="any",
        # --cp-comm-type; a2a+p2p with --hierarchical-context-parallel-sizes (the layout's
        # hierarchical_cp_sizes, searched per cp by planner.search.candidates)
        cp_algorithms=("p2p", "all_gather", "a2a", "a2a+p2p"),
        cp_algorithms_searched=("p2p", "all_gather", "a2a", "a2a+p2p"),
        sharding_stages=frozenset({0, 1}),  # the distributed optimizer is its ZeRO-1
        overlaps=frozenset({"tp_comm", "grad_reduce", "param_gather"}),
        offload="distributed-optimizer",
        recompute_methods=("uniform", "block"),
        sharding={
            "zero_stage": 0,
            "distributed_optimizer": True,
            "overlap_grad_reduce": True,
            "overlap_param_gather": True,
        },
        refusal_words={
            "sharding": "Megatron-LM has no ZeRO-2/3: use --framework deepspeed or torchtitan",
        },
        layout_rules=megatron_rules,
        # Megatron-LM core_v0.16.1, as pretrain_gpt.py parses them:
        # * cross_entropy_loss_fusion: a ModelParallelConfig field
        #   (megatron/core/model_parallel_config.py, default False) that
        #   megatron/training/arguments.py turns into --cross-entropy-loss-fusion; off,
        #   LanguageModule.compute_language_model_loss runs
        #   tensor_parallel.vocab_parallel_cross_entropy, the eager PyTorch ops;
        # * gradient_accumulation_fusion: on unless --no-gradient-accumulation-fusion
        #   (arguments.py, _add_training_args: store_false; the dataclass's own False is
        #   excluded from the generated flags as an "incompatible default"); Transformer
        #   Engine's linears then get fuse_wgrad_accumulation
        #   (megatron/core/extensions/transformer_engine.py) and the output layer's
        #   ColumnParallelLinear calls Apex's wgrad_gemm_accum_fp32: the weight-gradient
        #   GEMMs add into the fp32 main_grad themselves
        kernel_switches={"cross_entropy_loss_fusion": False, "gradient_accumulation_fusion": True},
    )
)

DEEPSPEED = register(
    FrameworkProfile(
        name="deepspeed",
        description="DeepSpeed (ds_config.json) on a HuggingFace-style model",
        state_layout="zero",
        optimizer_impl="fused",  # DeepSpeed FusedAdam
        fused_kernels=False,
        allocator_pattern="zero-buckets",
        # no tensor or expert parallelism in the config (model-code libraries); its
        # sequence parallelism is Ulysses (all-to-all) over the cp ranks
        axes=frozenset({"cp", "pp"}),
        schedules=("1f1b",),  # PipelineEngine: no interleaved stages
        uneven_stages="none",  # PipelineModule partitions uniformly, by parameters or type
        cp_algorithms=("a2a",),
        cp_algorithms_searched=("a2a",),
        sharding_stages=frozenset({0, 1, 2, 3}),
        overlaps=frozenset({"grad_reduce"}),
        offload="zero",
        recompute_methods=("uniform",),  # activation_checkpoint_interval: every N layers
        sharding={"zero_stage": 1, "overlap_grad_reduce": True},
        refusal_words={
            "tp": "DeepSpeed's config has no tensor parallelism; it needs Megatron-DeepSpeed or "
            "another model-parallel library: plan with --framework deepspeed, or emit megatron",
            "ep": "expert parallelism is set in the model code "
            "(deepspeed.moe.layer.MoE(ep_size=...)), not in the ZeRO config; emit megatron",
            "vpp": "DeepSpeed's pipeline engine has no interleaved (virtual) stages; plan "
            "without vpp or emit megatron",
            "uneven": "DeepSpeed's PipelineModule partitions layers uniformly, by parameters "
            "or by type; an explicit per-stage layer count cannot be expressed",
            "cp_comm_type": "DeepSpeed's only context parallelism is Ulysses (all-to-all, "
            "cp_comm_type a2a); ring attention needs Megatron or torchtitan",
        },
        layout_rules=deepspeed_rules,
    )
)

TORCHTITAN = register(
    FrameworkProfile(
        name="torchtitan",
        description="torchtitan (FSDP2, a recipe module or a v0.2.x TOML job file)",
        state_layout="fsdp",
        optimizer_impl="foreach",  # torch.optim.AdamW with its default foreach implementation
        fused_kernels=False,
        allocator_pattern="fsdp-per-layer",
        axes=frozenset({"tp", "cp", "pp", "ep", "sequence_parallel"}),
        schedules=("1f1b", "interleaved-1f1b"),
        uneven_stages="ends-at-most-middle",  # *_stage_less_layers, without vpp
        cp_algorithms=("p2p", "all_gather"),
        cp_algorithms_searched=("p2p",),
        cp_algorithms_by_version={
            # 0.2.2: context_parallel_rotate_method alltoall (the ring) or allgather;
            # 0.3.0 context parallelism all-gathers K/V only
            TORCHTITAN_TOML_RELEASE: ("p2p", "all_gather"),
            TORCHTITAN_CURRENT_RELEASE: ("all_gather",),
        },
        # the emitters: a 0.3.0 recipe (current, the default) or a 0.2.x TOML job file
        versions={"current": TORCHTITAN_CURRENT_RELEASE, "0.2": TORCHTITAN_TOML_RELEASE},
        # 0.3.0 ParallelDims: expert parallelism with etp 1 only; 0.2.2: etp 1 or tp
        expert_tp_under_ep={TORCHTITAN_CURRENT_RELEASE: False, TORCHTITAN_TOML_RELEASE: True},
        sharding_stages=frozenset({0, 3}),  # DDP (replicate) or FSDP2 (fully_shard)
        overlaps=frozenset({"tp_comm"}),  # async TP; FSDP2 always prefetches
        offload="none",  # enable_cpu_offload moves every state, never the optimizer alone
        recompute_methods=(),  # checkpoints each block: no recompute groups
        sharding={"zero_stage": 3},
        # torchtitan shards with FSDP2 (fully_shard) over the data-parallel ranks by default
        layout_defaults={"zero_stage": 3},
        refined_knobs=frozenset({"mbs", "vpp", "stage_split", "recompute"}),
        refusal_words={
            "sharding": "ZeRO-{stage} (or Megatron's distributed optimizer) has no torchtitan "
            "setting: it shards everything with FSDP or nothing; use FSDP (zero 3), or zero 0 "
            "for DDP",
            "offload": "torchtitan offloads parameters, gradients and optimizer states "
            "together (training.enable_cpu_offload), never the optimizer alone or a fraction",
            "cp_comm_type": "torchtitan's context parallelism exchanges K/V (ring or "
            "all-gather); it has no Ulysses all-to-all: use p2p or all_gather",
        },
        layout_rules=torchtitan_rules,
    )
)

PYTORCH = register(
    FrameworkProfile(
        name="pytorch",
        description="plain PyTorch (DDP, autocast): the software benchmarks/measure runs",
        state_layout="autocast",
        optimizer_impl="per_tensor",  # benchmarks/measure: AdamW(foreach=False)
        fused_kernels=False,
        allocator_pattern="ddp-buckets",
        axes=frozenset({"tp", "cp", "pp", "ep", "sequence_parallel"}),
        schedules=("1f1b", "interleaved-1f1b"),
        uneven_stages="any",
        cp_algorithms=("p2p",),
        cp_algorithms_searched=("p2p",),
        sharding_stages=frozenset({0}),
        overlaps=frozenset({"grad_reduce"}),
        offload="none",
        recompute_methods=(),
        sharding={"zero_stage": 0},
        # the measuring script runs neither virtual nor uneven pipeline stages
        refined_knobs=frozenset({"mbs", "recompute"}),
    )
)
