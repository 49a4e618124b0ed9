#!/usr/bin/env bash
# torchtitan launch for qwen3-30b-a3b on 8 GPUs (1 node x 8), written by autopar 0.0.0+test.
# Targets torchtitan 0.2.2 (TOML job files, v0.1.0-v0.2.2): torchtitan.toml.
# Layout: dp 8 (FSDP) x tp 1 x cp 1 x pp 1, ep 8; micro-batch 1, gradient accumulation 8; recompute full; bf16.
# Predicted by autopar (estimates, not measurements):
#   step time    3.250 s
#   throughput   80000 tokens/s
#   MFU          0.500
#   peak memory  60.0 GiB per GPU
#
# Environment:
#   TORCHTITAN_PATH  torchtitan checkout to run in (default: the current directory);
#                    the tokenizer is read from ./assets/hf/Qwen3-30B-A3B there
#   NNODES           number of nodes (default 1); NNODES x 8 must be 8
#   NODE_RANK        this node's rank, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR      address of node 0 (default 127.0.0.1)
#   MASTER_PORT      rendezvous port on node 0 (default 29500)
#   LOG_RANK         local ranks whose output is shown (default 0)
# Arguments are passed to torchtitan.train, e.g. --training.steps 5000 (written here:
# 1000 steps on the c4 dataset, as torchtitan's recipes; set yours).
# A config check without training:
#   NGPU=8 LOCAL_RANK=0 python -m torchtitan.train --job.config_file <this folder>/torchtitan.toml \
#     --comm.mode fake_backend --training.steps 1  (in TORCHTITAN_PATH, on one GPU)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TORCHTITAN_PATH="${TORCHTITAN_PATH:-$PWD}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
LOG_RANK="${LOG_RANK:-0}"
if [ "$((NNODES * 8))" -ne 8 ]; then
  echo "this plan is for 8 GPUs: NNODES x 8 must equal it" >&2
  exit 1
fi
cd "$TORCHTITAN_PATH"

PYTORCH_ALLOC_CONF="expandable_segments:True" exec torchrun \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node 8 \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --local-ranks-filter "$LOG_RANK" --role rank --tee 3 \
  -m torchtitan.train --job.config_file "$HERE/torchtitan.toml" "$@"
