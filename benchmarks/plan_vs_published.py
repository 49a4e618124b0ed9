"""The planner's best plan against published training layouts, under the same cost model.

For each published run, the planner searches the same model, GPU count, sequence length
and global batch, and the published layout is costed by the same cost model. Printed per
run: the published layout and its predicted step time and MFU, our best plan and its
predicted step time and MFU, how much faster ours is predicted, and why (the knobs that
differ and where the time goes). Both are costed as the planner runs layouts
(Megatron-LM: distributed optimizer with overlapped gradient reduce and parameter gather,
sequence parallelism with TP, flash attention), so the comparison is of layouts, not of
2021 and 2024 software. The published layout's measured number is printed for reference.

Sources:
* Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
  Megatron-LM" (SC'21, arXiv:2104.04473), Table 1: GPT 1.7B to 1T on 32 to 3,072 A100s,
  full recomputation (records in benchmarks/data/published_runs.json).
* Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
  (arXiv:2205.05198), Table 5: 22B/175B/530B/1T, full recomputation and sequence
  parallelism with selective recomputation (same file).
* Dubey et al., "The Llama 3 Herd of Models" (arXiv:2407.21783), Table 4: Llama 3 405B
  pre-training on 8,192 and 16,384 H100s (TP 8, PP 16, CP 1 at 8K tokens, CP 16 at 128K;
  16M tokens per batch; 430, 400 and 380 TFLOP/s per GPU, 43%, 41% and 38% BF16 MFU).
  Section 3.3.2 states the rest of the layout: an interleaved schedule, one transformer
  layer fewer on the first and on the last stage (the embedding and the output layer take
  a layer's place: Megatron-LM's ``--account-for-embedding-in-pipeline-split`` and
  ``--account-for-loss-in-pipeline-split``, 128 slots over 16 stages), no activation
  checkpointing at 8K tokens, and all-gather context parallelism (K and V all-gathered
  before attention) at 128K, and FSDP for data parallelism that shards the optimizer
  states and the gradients but keeps the parameters gathered after the forward (costed
  with the ``zero`` state layout at ZeRO stage 2, ``LLAMA3_STATE_LAYOUT``).
  The number of virtual stages is not stated: each that divides the 8 slots per stage
  is costed, and the fastest that fits is the published layout (the fastest of all,
  marked as not fitting, where none does). These layouts are
  costed with ``estimate`` directly: with uneven ends the search also proposes first/last
  stage sizes, which Megatron-LM cannot combine with the account-for splits.

Knobs a source does not state (the micro-batch size and interleaving of Table 1; the
micro-batch, interleaving and recomputation of Llama 3) are filled by the planner itself:
the "published layout" is the best layout with every stated knob fixed (``search`` with
``fixed``), so the check compares our best against the best the published choices allow.
Published runs whose model is not in the catalogue (the Megatron-Core H100 weak-scaling
models) are left out.

Where the source gives the measured MFU (Llama 3), "ours is faster" is printed only when
the published layout's predicted MFU is within ``MFU_TOLERANCE`` of it: a speed-up over a
layout the model mispredicts says nothing.

Run: ``python benchmarks/plan_vs_published.py [--only ptdp,llama3] [--json out.json]``.
Check: our best is never predicted slower than the published layout, which must fit in
our memory model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from planner import Infeasible, ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model
from planner.predict import Estimate
from planner.search.driver import compare, layout_label, search

VALIDATION = Path(__file__).resolve().parent / "data" / "published_runs.json"
MODEL_BY_SHAPE = {
    (24, 2304): "gpt-1.7b", (30, 3072): "gpt-3.6b", (36, 4096): "gpt-7.5b",
    (40, 6144): "gpt-18.4b", (48, 8192): "gpt-39.1b", (60, 10240): "gpt-76.1b",
    (80, 12288): "gpt-145.6b", (96, 16384): "gpt-310.1b", (105, 20480): "gpt-529.6b",
    (128, 25600): "gpt-1t", (48, 6144): "gpt-22b", (96, 12288): "gpt-175b",
}  # fmt: skip
LLAMA3 = "Dubey et al. 2024 (arXiv:2407.21783), Table 4"
LLAMA3_RUNS = [
    # GPUs, TP, CP, PP, sequence length, TFLOP/s per GPU (Table 4); 16M tokens per batch
    (8192, 8, 1, 16, 8192, 430),
    (16384, 8, 1, 16, 8192, 400),
    (16384, 8, 16, 16, 131072, 380),
]
TOKENS_PER_BATCH = 16 * 2**20
LLAMA3_SLOTS_PER_STAGE = 8
"""(126 layers + the embedding + the output layer) / 16 stages (Section 3.3.2)."""
LLAMA3_KNOBS = {
    # Section 3.3.2: one layer fewer on the first and last stages; Meta's data parallelism
    # (FSDP sharding the optimizer states and the gradients, the parameters not resharded
    # after the forward: ZeRO stage 2, see LLAMA3_STATE_LAYOUT); Megatron-LM's setup for
    # the rest (sequence parallelism with TP, overlapped DP traffic)
    "account_for_embedding_in_pipeline_split": True,
    "account_for_loss_in_pipeline_split": True,
    "sequence_parallel": True,
    "zero_stage": 2,
    "overlap_grad_reduce": True,
    "overlap_param_gather": True,
}
LLAMA3_STATE_LAYOUT = "zero"
"""Meta's model states (Dubey et al. 2024, section 3.3.2, "Parallelism for Model
Scaling"): data parallelism is FSDP that shards the optimizer states and the gradients
but does not reshard the model parameters after the forward (to spare the backward an
extra all-gather), so every DP rank holds its stage's bf16 parameters through the step.
Those bytes are the ``zero`` state layout at ZeRO stage 2: bf16 weights (2 bytes, whole),
bf16 gradients (2) and the fp32 master copy and Adam moments (12) sharded over DP x CP.
Megatron-LM's layout (a whole fp32 gradient buffer of the stage, 4 bytes per parameter
unsharded) is not what Meta ran. The ``fsdp`` layout with ``reshard_after_forward=False``
holds nearly the same bytes at the peak (1.6 GiB more) but is timed as FSDP2, gathering
the parameters again for every micro-batch, which the paper's choice is made to avoid.
The gradients' dtype is not stated; ``zero`` keeps them in bf16."""
MFU_TOLERANCE = 0.10
"""Relative MFU error within which a published layout counts as predicted."""


def published_runs() -> list[dict[str, Any]]:
    """Every run to compare: model, cluster, workload, the published layout, citation."""
    runs = []
    for record in json.loads(VALIDATION.read_text()):
        if not record["id"].startswith(("ptdp-table1", "korthikanti-table5")):
            continue
        shape = record["model"]
        model = MODEL_BY_SHAPE[(shape["layers"], shape["hidden"])]
        selective = str(record["recompute"]).startswith("selective")
        measured = record["measured"]
        runs.append(
            {
                "id": record["id"],
                "source": f"{record['source']['title'].split(',')[0]}, "
                f"{record['source']['location'].split(' (')[0]}",
                "model": model,
                "cluster": "dgx-a100",
                "gpus": record["num_gpus"],
                "seq_len": shape["seq_len"],
                "global_batch": record["global_batch_size"]["sequences"],
                "stated": {
                    "tp": record["tp"], "pp": record["pp"], "cp": record["cp"] or 1,
                    "recompute": "selective" if selective else "full",
                    **({"mbs": record["micro_batch_size"]} if record["micro_batch_size"] else {}),
                    **({"vpp": record["vpp"]} if record["id"].startswith("korthikanti") else {}),
                },
                "measured": (
                    f"{measured['step_time_s']} s/step" if measured["step_time_s"]
                    else f"{measured['tflops_per_gpu']} TFLOP/s/GPU (paper's count)"
                ),
            }
        )  # fmt: skip
    for gpus, tp, cp, pp, seq_len, tflops in LLAMA3_RUNS:
        runs.append(
            {
                "id": f"llama3-405b-{gpus}gpu-{seq_len // 1024}k",
                "source": LLAMA3,
                "model": "llama-3.1-405b",
                "cluster": "dgx-h100",
                "gpus": gpus,
                "seq_len": seq_len,
                "global_batch": TOKENS_PER_BATCH // seq_len,
                "stated": {
                    "tp": tp, "pp": pp, "cp": cp, "interleaved": True,
                    "stage layers": "7/8/.../8/7", "states": "FSDP, ZeRO-2 (zero)",
                    **({"recompute": "none"} if seq_len <= 8192 else {}),
                    **({"cp_comm_type": "all_gather"} if cp > 1 else {}),
                },
                "measured": f"{tflops} TFLOP/s/GPU",
                "measured_tflops": tflops,
                "published_candidates": _llama3_layouts(tp=tp, pp=pp, cp=cp, seq_len=seq_len),
                "state_layout": LLAMA3_STATE_LAYOUT,
            }
        )  # fmt: skip
    return runs


def _llama3_layouts(*, tp: int, pp: int, cp: int, seq_len: int) -> list[ParallelConfig]:
    """Meta's stated layout with each unstated knob it leaves open: the virtual stages
    (dividing the slots per stage) and, beyond 8K tokens, the recomputation."""
    recomputes = ["none"] if seq_len <= 8192 else ["none", "selective", "full"]
    return [
        ParallelConfig(
            tp=tp, pp=pp, cp=cp, vpp=vpp, recompute=recompute,
            cp_comm_type="all_gather" if cp > 1 else "p2p", **LLAMA3_KNOBS,
        )
        for vpp in (2, 4, 8)
        if LLAMA3_SLOTS_PER_STAGE % vpp == 0
        for recompute in recomputes
    ]  # fmt: skip


def _fastest(
    layouts: list[ParallelConfig],
    model: Any,
    cluster: Any,
    workload: WorkloadSpec,
    state_layout_name: str | None = None,
) -> Estimate:
    """The fastest of ``layouts`` that fits, else the fastest (its ``memory.fits`` False),
    with the model states held as ``state_layout_name`` (None: Megatron-LM's)."""
    estimates = [
        estimate(
            model=model, cluster=cluster, workload=workload, layout=layout,
            state_layout_name=state_layout_name,
        )
        for layout in layouts
    ]  # fmt: skip
    fitting = [e for e in estimates if e.memory.fits] or estimates
    return min(fitting, key=lambda e: e.time.step_time_s)


def compare_run(run: dict[str, Any], *, time_limit_s: float) -> dict[str, Any]:
    model = load_model(run["model"])
    cluster = load_cluster(run["cluster"], gpus=run["gpus"])
    workload = WorkloadSpec(seq_len=run["seq_len"], global_batch=run["global_batch"])
    row: dict[str, Any] = {
        "id": run["id"], "source": run["source"], "gpus": run["gpus"],
        "measured": run["measured"], "stated": run["stated"],
    }  # fmt: skip
    if "published_candidates" in run:
        theirs = _fastest(
            run["published_candidates"], model, cluster, workload, run.get("state_layout")
        )
    else:
        try:
            theirs = (
                search(
                    model, cluster, workload, fixed=run["stated"], top_k=1,
                    time_limit_s=time_limit_s,
                )
                .plans[0]
                .estimate
            )  # fmt: skip
        except Infeasible as error:
            return {**row, "published_fits": False, "error": f"published knobs: {error}"}
    row |= {
        "published_layout": layout_label(theirs.config)
        + (f" vpp {theirs.config.vpp}" if "vpp" not in layout_label(theirs.config)
           and theirs.config.vpp else ""),
        "published_step_s": theirs.time.step_time_s, "published_mfu": theirs.time.mfu,
        "published_fits": theirs.memory.fits,
        "published_peak_gib": theirs.memory.peak_gib,
    }  # fmt: skip
    if "measured_tflops" in run:
        measured_mfu = run["measured_tflops"] * 1e12 / cluster.gpu.peak_flops("bf16")
        error = theirs.time.mfu / measured_mfu - 1
        row |= {
            "measured_mfu": round(measured_mfu, 4),
            "published_mfu_error": round(error, 4),
            "published_predicted": abs(error) <= MFU_TOLERANCE,
        }
    started = time.perf_counter()
    try:
        result = search(model, cluster, workload, top_k=1, time_limit_s=time_limit_s)
    except Infeasible as error:
        return {**row, "error": str(error)}
    ours = result.plans[0].estimate
    step, published_step = ours.time.step_time_s, theirs.time.step_time_s
    return {
        **row,
        "plan_wall_s": round(time.perf_counter() - started, 2),
        "optimal": result.search.optimal,
        "our_layout": layout_label(ours.config),
        "our_step_s": step,
        "our_mfu": ours.time.mfu,
        "speedup_pct": round(100 * (published_step / step - 1), 2),
        "never_slower": step <= published_step,
        "why": compare(ours, theirs) if ours.config != theirs.config else "same layout",
    }


def _not_comparable(row: dict[str, Any]) -> str | None:
    """Why "ours is faster" means nothing for this row (None: it is compared)."""
    if not row["published_fits"]:
        return "the published layout does not fit our memory model"
    if not row.get("published_predicted", True):
        return (
            f"the published layout is predicted {row['published_mfu_error']:+.1%} off its "
            f"measured MFU, over {MFU_TOLERANCE:.0%}"
        )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated id prefixes (e.g. ptdp,llama3)")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    runs = published_runs()
    if args.only:
        prefixes = tuple(p.strip() for p in args.only.split(",") if p.strip())
        runs = [run for run in runs if run["id"].startswith(prefixes)]
    rows = [compare_run(run, time_limit_s=args.time_limit) for run in runs]
    for row in rows:
        stated = ", ".join(f"{k} {v}" for k, v in row["stated"].items())
        print(f"{row['id']} ({row['source']}; measured {row['measured']}; stated: {stated})")
        if "error" in row:
            print(f"  {row['error']}")
            continue
        fits = "" if row["published_fits"] else f" (peak {row['published_peak_gib']:.1f} GiB: "
        fits += "" if row["published_fits"] else "does NOT fit our memory model)"
        measured = (
            f" vs {row['measured_mfu']:.1%} measured ({row['published_mfu_error']:+.1%})"
            if "measured_mfu" in row else ""
        )  # fmt: skip
        print(
            f"  published  {row['published_layout']:<58} {row['published_step_s']:9.3f} s "
            f"MFU {row['published_mfu']:6.1%}{measured}{fits}"
        )
        why_not = _not_comparable(row)
        if why_not:
            print(
                f"  ours       {row['our_layout']:<58} {row['our_step_s']:9.3f} s MFU "
                f"{row['our_mfu']:6.1%}  (not compared: {why_not})"
            )
            continue
        verdict = "ok" if row["never_slower"] else "SLOWER THAN PUBLISHED"
        print(
            f"  ours       {row['our_layout']:<58} {row['our_step_s']:9.3f} s "
            f"MFU {row['our_mfu']:6.1%}  {row['speedup_pct']:+.1f}%  [{verdict}, "
            f"{'optimal' if row['optimal'] else 'not proven'}, {row['plan_wall_s']:.1f} s]"
        )
        print(f"  why        {row['why']}")
    compared = [row for row in rows if "error" not in row and not _not_comparable(row)]
    slower = [row["id"] for row in compared if not row["never_slower"]]
    unfit = [row["id"] for row in rows if not row["published_fits"]]
    summary = f"{len(compared)} runs compared; ours never slower: {'yes' if not slower else 'NO'}"
    if slower:
        summary += f" (slower: {', '.join(slower)})"
    if unfit:
        summary += f"; published layouts that do not fit our memory model: {', '.join(unfit)}"
    else:
        summary += "; every published layout fits our memory model"
    print(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
