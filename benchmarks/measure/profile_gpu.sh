#!/usr/bin/env bash
# Kernel profile of this machine's GPUs for autopar's cost model: writes $OUT/profile.json.
#
#   OUT=/some/dir bash benchmarks/measure/profile_gpu.sh [more autopar-profile options]
#
# One GPU: GEMMs (bf16, and fp8 where the GPU has it), attention, memory bandwidth;
# collectives are listed as skipped. Several GPUs: one process per GPU under torchrun, the
# collectives over every group size first, then the one-GPU sections on GPU 0. The default
# grid is sized for about 3 minutes on one H100; whatever is left after --time-limit
# (420 s by default) is skipped and listed in the file, so the run ends well inside a
# 10-minute limit. For a collectives-only run on a multi-GPU machine: --sections collectives.
#
# Runs from a source checkout without installing autopar. Where autopar's pure-Python
# dependencies are missing (a GPU machine that cannot reach a package index), wheels in
# .whl/ are unpacked to /tmp/site first (pydantic, pydantic-core, annotated-types,
# typing-inspection, ortools, protobuf, immutabledict; torch, numpy, rich, typer and pyyaml
# must already be there).
set -euo pipefail
cd "$(dirname "$0")/../.."
out_dir=${OUT:-.}
out="$out_dir/profile.json"

if ! python3 -c "import planner.cli.profile" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}  # never NVLink multicast on shared hosts
export PYTHONUNBUFFERED=1

gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
start=$(date +%s)
if [ "$gpus" -gt 1 ]; then
  python3 -m torch.distributed.run --standalone --nproc_per_node "$gpus" \
    -m planner.profile --out "$out" "$@"
else
  python3 -m planner.profile --out "$out" "$@"
fi
echo "profile_gpu.sh: $gpus GPU(s), $(($(date +%s) - start)) s in all; wrote $out"
