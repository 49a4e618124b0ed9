"""Cross-check on H100s: the Megatron-Core weak-scaling table (MFU), with stated assumptions.

Source (records in benchmarks/data/published_runs.json, ids ``mcore-h100-weak-*``):
NVIDIA Megatron-LM README, "Training Speed and Scalability" (Megatron-Core r0.8.0, DGX
H100, model_table.png): GPT models of 2B to 462B parameters on 48 to 6,144 H100s with
their TP, PP, global batch and MFU; vocabulary 131,072, sequence 4,096, and the overlap
switches (``--overlap-grad-reduce --overlap-param-gather --tp-comm-overlap``).

What the table does not state is assumed here, the same for every row, and printed with
it: micro-batch 1, no interleaving, no recomputation, sequence parallelism wherever
TP > 1 (``--tp-comm-overlap`` requires it), the distributed optimizer, ffn 4h, multi-head
attention, RoPE, untied output layer, no dropout, flash attention, bf16. So this is a
cross-check of the H100 time model (the GPU our kernel profile was measured on), not a
target: the target tables are ``time_published.py``'s. Nothing is fitted to these rows.

Run: ``python benchmarks/time_published_h100.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model

VALIDATION = Path(__file__).resolve().parent / "data" / "published_runs.json"
PREFIX = "mcore-h100-weak"
SEQ_LEN = 4096


def _model(record: dict[str, Any]) -> Any:
    shape = record["model"]
    return load_model("gpt-1.7b").model_copy(
        update={
            "name": record["id"],
            "num_layers": shape["layers"],
            "hidden_size": shape["hidden"],
            "num_attention_heads": shape["heads"],
            "num_kv_heads": shape["kv_heads"],
            "ffn_hidden_size": 4 * shape["hidden"],
            "vocab_size": shape["vocab"],
            "max_position_embeddings": SEQ_LEN,
            "position_embedding": "rope",
            "rope_theta": 10000.0,  # Megatron-LM's --rotary-base default (arguments.py)
            "tie_embeddings": False,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
        }
    )


def rows() -> list[dict[str, Any]]:
    out = []
    for record in json.loads(VALIDATION.read_text()):
        if not record["id"].startswith(PREFIX):
            continue
        tp = record["tp"]
        layout = ParallelConfig(
            tp=tp,
            pp=record["pp"],
            mbs=1,
            sequence_parallel=tp > 1,
            distributed_optimizer=True,
            overlap_grad_reduce=True,
            overlap_param_gather=True,
            tp_comm_overlap=tp > 1,
        )
        result = estimate(
            model=_model(record),
            cluster=load_cluster("dgx-h100", gpus=record["num_gpus"]),
            workload=WorkloadSpec(
                seq_len=SEQ_LEN, global_batch=record["global_batch_size"]["sequences"]
            ),
            layout=layout,
            framework="megatron",
        )
        published = record["measured"]["mfu_pct"]
        ours = 100 * result.time.mfu
        out.append(
            {"id": record["id"], "published_mfu_pct": published, "autopar_mfu_pct": round(ours, 2),
             "error_pct": round(100 * (ours / published - 1), 2),
             "step_time_s": result.time.step_time_s, "breakdown_s": result.time.breakdown_s}
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    table = rows()
    print(f"{'run':<34}{'published MFU':>14}{'autopar MFU':>13}{'error':>9}")
    for row in table:
        print(
            f"{row['id']:<34}{row['published_mfu_pct']:>13.1f}%{row['autopar_mfu_pct']:>12.1f}%"
            f"{row['error_pct']:>+8.2f}%"
        )
    errors = [abs(row["error_pct"]) for row in table]
    print(
        f"{len(errors)} rows: mean |error| {sum(errors) / len(errors):.2f}%, worst "
        f"{max(errors):.2f}% (cross-check under the assumptions above; no target)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
