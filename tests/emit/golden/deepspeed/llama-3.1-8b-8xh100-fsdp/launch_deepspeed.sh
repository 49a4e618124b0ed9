#!/usr/bin/env bash
# DeepSpeed launch for llama-3.1-8b on 8 GPUs (1 node x 8), written by autopar 0.0.0+test.
# Layout: dp 8, ZeRO-3, micro-batch 1, gradient accumulation 8, global batch 64 x 4096 tokens, bf16.
# Predicted by autopar (estimates, not measurements):
#   step time    3.250 s
#   throughput   80000 tokens/s
#   MFU          0.500
#   peak memory  60.0 GiB per GPU
#
# Environment:
#   TRAIN_SCRIPT  your training script (required): it calls deepspeed.initialize() and
#                 accepts --deepspeed --deepspeed_config PATH; the arguments given to
#                 this script are passed on to it
#   HOSTFILE      DeepSpeed hostfile, one 'host slots=8' line per node (default /job/hostfile)
#   MASTER_ADDR   address of the first node (default 127.0.0.1)
#   MASTER_PORT   rendezvous port (default 29500)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRAIN_SCRIPT="${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}"
HOSTFILE="${HOSTFILE:-/job/hostfile}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"

exec deepspeed \
  --hostfile "$HOSTFILE" \
  --num_nodes 1 \
  --num_gpus 8 \
  --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" \
  "$TRAIN_SCRIPT" "$@" \
  --deepspeed \
  --deepspeed_config "$HERE/ds_config.json"
