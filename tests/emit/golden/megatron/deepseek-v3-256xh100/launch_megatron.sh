#!/usr/bin/env bash
# Megatron-LM pretrain_gpt.py launch for deepseek-v3, written by autopar 0.0.0+test.
#
# Plan: 256 GPUs (32 node(s) x 8); tp 2, pp 8, cp 1, dp 16, ep 32; fp8
# Predicted by autopar (an estimate, not a measurement):
#   step time     3.250 s
#   throughput    80000.0 tokens/s
#   MFU           50.00 %
#   peak memory   60.00 GiB per GPU
#
# Environment it reads (run it on every node, each with its own NODE_RANK):
#   MASTER_ADDR      rendezvous host, the address of node 0 (default: localhost)
#   MASTER_PORT      rendezvous port (default: 6000)
#   NODE_RANK        this node's index, 0 .. NNODES-1 (default: 0)
#   NNODES           number of nodes (default: 32, the plan's)
#   MEGATRON_PATH    a checkout of NVIDIA/Megatron-LM (required)
#   DATA_PATH        Megatron-preprocessed dataset prefix (tools/preprocess_data.py) (required; yours to set)
#   TOKENIZER_MODEL  HuggingFace tokenizer name or path (required; yours to set)
#   CHECKPOINT_PATH  directory to save checkpoints to and resume from (required; yours to set)
#   TRAIN_ITERS      optimizer steps to run (default: 1000; yours to set)
#   LR               peak learning rate (default: 3.0e-4; yours to set)
#   SAVE_INTERVAL    steps between checkpoints (default: 1000; yours to set)
set -euo pipefail

: "${MEGATRON_PATH:?set MEGATRON_PATH (see the header of this script)}"
: "${DATA_PATH:?set DATA_PATH (see the header of this script)}"
: "${TOKENIZER_MODEL:?set TOKENIZER_MODEL (see the header of this script)}"
: "${CHECKPOINT_PATH:?set CHECKPOINT_PATH (see the header of this script)}"
MASTER_ADDR="${MASTER_ADDR:-localhost}"
MASTER_PORT="${MASTER_PORT:-6000}"
NODE_RANK="${NODE_RANK:-0}"
NNODES="${NNODES:-32}"
TRAIN_ITERS="${TRAIN_ITERS:-1000}"
LR="${LR:-3.0e-4}"
SAVE_INTERVAL="${SAVE_INTERVAL:-1000}"
if [ "$NNODES" != 32 ]; then
  echo "warning: the plan is for 32 node(s) of 8 GPUs; Megatron will derive another data-parallel size" >&2
fi

# Megatron-LM asserts this with tp > 1 or cp > 1 on GPUs before Blackwell.
export CUDA_DEVICE_MAX_CONNECTIONS=1

# model: deepseek-v3 (https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json)
MODEL_ARGS=(
  --num-layers 61
  --hidden-size 7168
  --ffn-hidden-size 18432
  --num-attention-heads 128
  # MLA (excludes --group-query-attention)
  --multi-latent-attention
  --q-lora-rank 1536
  --kv-lora-rank 512
  --qk-head-dim 128
  --qk-pos-emb-head-dim 64
  --v-head-dim 128
  --swiglu
  --normalization RMSNorm
  --norm-epsilon 1e-06
  # Megatron's default is a bias on every linear
  --disable-bias-linear
  # Megatron ties by default
  --untie-embeddings-and-output-weights
  --position-embedding-type rope
  --rotary-base 10000
  # MLA would default to YaRN (factor 40)
  --rope-type rope
  # the fused MLA RoPE kernel is YaRN-only
  --no-rope-fusion
  --max-position-embeddings 163840
  # Megatron pads the vocabulary to a multiple of 128 x tp = 256: 129280 -> 129280
  # (with HuggingFaceTokenizer it pads the tokenizer's own size)
  --vocab-size 129280
  # MoE
  --num-experts 256
  --moe-router-topk 8
  --moe-ffn-hidden-size 2048
  # 1 shared expert(s) x 2048
  --moe-shared-expert-intermediate-size 2048
  # 1 = MoE layer, 0 = dense layer
  --moe-layer-freq '([0]*3+[1]*58)'
  --moe-router-score-function sigmoid
  --moe-router-enable-expert-bias
  --moe-token-dispatcher-type alltoall
  --moe-grouped-gemm
  --mtp-num-layers 1
  # Megatron's default is 0.1
  --hidden-dropout 0.0
  --attention-dropout 0.0
)

# parallelism
PARALLEL_ARGS=(
  # 256 GPUs = tp 2 x cp 1 x pp 8 x dp 16; ep 32 folds into dp x cp x tp
  --tensor-model-parallel-size 2
  --pipeline-model-parallel-size 8
  --context-parallel-size 1
  --expert-model-parallel-size 32
  --expert-tensor-parallel-size 1
  # uneven split, layers per stage: 7 8 8 8 8 8 8 6
  --decoder-first-pipeline-num-layers 7
  --decoder-last-pipeline-num-layers 6
  # only with tp > 1; Megatron-LM requires it with tp > 1 and ep > 1
  --sequence-parallel
)

# batch
BATCH_ARGS=(
  # 512 sequences per step = mbs 1 x dp 16 x 32 micro-batches
  --micro-batch-size 1
  --global-batch-size 512
  --seq-length 4096
)

# precision
PRECISION_ARGS=(
  # fp8 GEMMs through Transformer Engine (default --fp8-recipe)
  --bf16
  --fp8-format hybrid
)

# optimizer
OPTIMIZER_ARGS=(
  # ZeRO-1-like, over dp x cp
  --use-distributed-optimizer
  --overlap-grad-reduce
  # Megatron-LM requires both of the above with it
  --overlap-param-gather
)

# recompute
RECOMPUTE_ARGS=(
  --recompute-granularity full
  --recompute-method block
  --recompute-num-layers 2
)

# data, tokenizer, schedule, checkpoints, logging: yours to set
DATA_ARGS=(
  --data-path "$DATA_PATH"
  --tokenizer-type HuggingFaceTokenizer
  --tokenizer-model "$TOKENIZER_MODEL"
  --train-iters "$TRAIN_ITERS"
  --lr "$LR"
  --save "$CHECKPOINT_PATH"
  --load "$CHECKPOINT_PATH"
  # Megatron requires it with --save
  --save-interval "$SAVE_INTERVAL"
  --log-interval 1
  # TFLOP/s per GPU, to compare with the prediction above
  --log-throughput
)

torchrun \
  --nproc_per_node 8 \
  --nnodes "$NNODES" \
  --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" \
  "$MEGATRON_PATH"/pretrain_gpt.py \
  "${MODEL_ARGS[@]}" \
  "${PARALLEL_ARGS[@]}" \
  "${BATCH_ARGS[@]}" \
  "${PRECISION_ARGS[@]}" \
  "${OPTIMIZER_ARGS[@]}" \
  "${RECOMPUTE_ARGS[@]}" \
  "${DATA_ARGS[@]}"
