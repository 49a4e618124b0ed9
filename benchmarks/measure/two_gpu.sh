#!/usr/bin/env bash
# Two-GPU measurements (one process per GPU, NCCL): every mode on llama-1b in both
# precisions, then llama-8b in each mode where it fits on two H200s.
#
#   bash benchmarks/measure/two_gpu.sh runs-2gpu.jsonl
#
# EXTRA_ARGS is appended to every command (argparse keeps the last value of a flag), e.g.
# EXTRA_ARGS="--preset tiny --seq-len 64 --device cpu" to try the list on CPU with gloo.
# A failed run (an OOM exits with status 3 after writing its record) does not stop the
# list. Each run spends about 15-30 s starting processes and NCCL besides its steps.
set -u
out=${1:?usage: two_gpu.sh OUT.jsonl}
here=$(cd "$(dirname "$0")" && pwd)
read -r -a extra <<<"${EXTRA_ARGS:-}"

run() {
  torchrun --standalone --nproc_per_node 2 "$here/train_step.py" --out "$out" "$@" "${extra[@]}" \
    || echo "failed (status $?): $*" >&2
}

for mode in ddp fsdp2 tp pp; do
  run --mode "$mode" --preset llama-1b --seq-len 4096 --mbs 1 --grad-accum 4
  run --mode "$mode" --preset llama-1b --seq-len 4096 --mbs 1 --grad-accum 4 \
    --precision bf16 --recompute full
done
run --mode pp --pp-schedule gpipe --preset llama-1b --seq-len 4096 --grad-accum 4
run --mode ddp --preset llama-8b --seq-len 2048 --grad-accum 2 --precision bf16 --recompute full
run --mode fsdp2 --preset llama-8b --seq-len 4096 --grad-accum 2 --recompute full
run --mode tp --preset llama-8b --seq-len 4096 --grad-accum 2 --precision bf16 --recompute full
run --mode pp --preset llama-8b --seq-len 4096 --grad-accum 4 --precision bf16
