#!/usr/bin/env bash
# Megatron-LM pretrain_gpt.py launch for llama-3.1-8b, written by autopar 0.0.0+test.
#
# Plan: 8 GPUs (1 node(s) x 8); tp 8, pp 1, cp 1, dp 1, ep 1; bf16
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
#   NNODES           number of nodes (default: 1, the plan's)
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
NNODES="${NNODES:-1}"
TRAIN_ITERS="${TRAIN_ITERS:-1000}"
LR="${LR:-3.0e-4}"
SAVE_INTERVAL="${SAVE_INTERVAL:-1000}"
if [ "$NNODES" != 1 ]; then
  echo "warning: the plan is for 1 node(s) of 8 GPUs; Megatron will derive another data-parallel size" >&2
fi

# Megatron-LM asserts this with tp > 1 or cp > 1 on GPUs before Blackwell.
export CUDA_DEVICE_MAX_CONNECTIONS=1

# autopar memplan --budget-gib 40: this recompute/offload setting plans a peak of 39.50 GiB
#   per GPU and adds 0.200 s per step (largest over the stages).

# model: llama-3.1-8b (https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json)
MODEL_ARGS=(
  --num-layers 32
  --hidden-size 4096
  --ffn-hidden-size 14336
  --num-attention-heads 32
  --group-query-attention
  --num-query-groups 8
  --swiglu
  --normalization RMSNorm
  --norm-epsilon 1e-05
  # Megatron's default is a bias on every linear
  --disable-bias-linear
  # Megatron ties by default
  --untie-embeddings-and-output-weights
  --position-embedding-type rope
  --rotary-base 500000
  --max-position-embeddings 131072
  # Megatron pads the vocabulary to a multiple of 128 x tp = 1024: 128256 -> 129024
  # (with HuggingFaceTokenizer it pads the tokenizer's own size)
  --vocab-size 128256
  # Megatron's default is 0.1
  --hidden-dropout 0.0
  --attention-dropout 0.0
)

# parallelism
PARALLEL_ARGS=(
  # 8 GPUs = tp 8 x cp 1 x pp 1 x dp 1
  --tensor-model-parallel-size 8
  --pipeline-model-parallel-size 1
  --context-parallel-size 1
  # only with tp > 1; Megatron-LM requires it with tp > 1 and ep > 1
  --sequence-parallel
)

# batch
BATCH_ARGS=(
  # 64 sequences per step = mbs 1 x dp 1 x 64 micro-batches
  --micro-batch-size 1
  --global-batch-size 64
  --seq-length 4096
)

# precision
PRECISION_ARGS=(
  --bf16
)

# recompute
RECOMPUTE_ARGS=(
  # activations of the first N layers to the host (Transformer Engine's CPU offload; autopar memplan)
  --cpu-offloading-num-layers 10
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
  "${RECOMPUTE_ARGS[@]}" \
  "${DATA_ARGS[@]}"
