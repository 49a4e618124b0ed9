"""Every plan the search returns for a framework is one that framework's emitter writes.

For each framework with an emitter, 50 random jobs (seeded: catalogue models, dense and
MoE, GPU counts, sequence lengths, batches) are planned with a short time limit, and every
returned plan (the whole top-k) is emitted with the framework's emitter; a refusal fails
the test with the job and the reason. The refusals are constraints of the search
(``planner.frameworks.refusals``), so none may be left for the emitter to find.

Models are drawn from those the emitter can write at all (what no layout changes is the
emitter's business, not the search's): torchtitan's model table; for Megatron-LM the
catalogue models without an activation, norm or position scheme it has no flag for.
GPU counts fill whole nodes (or one node), the launchers' own condition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from planner.catalog import list_catalog_models, load_cluster
from planner.emit import EmitError, EmitInput, emit, emit_input_from_estimate, load_emitters
from planner.emit.torchtitan import TORCHTITAN_MODELS
from planner.errors import Infeasible, TimeLimitReached
from planner.plan import PlanRequest, plan
from planner.specs import ModelSpec, ParallelConfig, WorkloadSpec

JOBS = 50
SEED = 14
TIME_LIMIT_S = 1.0
"""Past it a search returns the best plans found: they must be emitted all the same."""
TOP_K = 3
MAX_PARAMS = 50e9
MAX_GPUS = 32
"""Models and clusters up to these sizes keep each search about a second on a shared CI
core (the issue's 70B-on-64 examples are planned once each, below)."""
SEQ_LENS = (1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class Job:
    model: ModelSpec
    gpus: int
    seq_len: int
    global_batch: int
    version: str | None

    def __str__(self) -> str:
        at = f" (version {self.version})" if self.version else ""
        return (
            f"{self.model.name} on {self.gpus} GPUs, seq {self.seq_len}, batch "
            f"{self.global_batch}{at}"
        )


def _writable(framework: str, model: ModelSpec) -> bool:
    if framework == "torchtitan":
        return model.name in TORCHTITAN_MODELS
    if framework == "megatron":
        return _megatron_writes(model)
    return True


def _megatron_writes(model: ModelSpec) -> bool:
    """Whether Megatron-LM writes the model at all: it writes a one-GPU plain plan of it."""
    probe = EmitInput(
        model=model, num_gpus=1, gpus_per_node=8, seq_len=2048, global_batch=1,
        precision="bf16", layout=ParallelConfig(dp=1), framework="megatron", predictions={},
    )  # fmt: skip
    try:
        emit(probe, format="megatron")
    except EmitError:
        return False
    return True


def random_jobs(framework: str, *, count: int = JOBS, seed: int = SEED) -> list[Job]:
    """``count`` seeded jobs the framework's emitter can write at all (module docstring)."""
    load_emitters()
    rng = random.Random(f"{framework}-{seed}")
    catalogue = [
        entry
        for entry in list_catalog_models()
        if entry.stated_params_total <= MAX_PARAMS and _writable(framework, entry.spec)
    ]
    assert any(entry.spec.moe is not None for entry in catalogue), "no MoE model drawn"
    jobs = []
    for _ in range(count):
        entry = rng.choice(catalogue)
        # enough GPUs that the states of a 16-bytes-per-parameter model can fit, up to 4x
        least = max(1, 1 << max(0, round(entry.stated_params_total * 16 / 60e9) - 1).bit_length())
        gpus = min(MAX_GPUS, least * rng.choice((1, 2, 4)))
        model = entry.spec
        lengths = [
            n
            for n in SEQ_LENS
            if model.position_embedding != "learned" or n <= model.max_position_embeddings
        ]
        seq_len = rng.choice(lengths)
        global_batch = gpus * rng.choice((1, 2, 4, 8)) // rng.choice((1, 2))
        version = rng.choice(("current", "0.2")) if framework == "torchtitan" else None
        jobs.append(Job(model, gpus, seq_len, max(1, global_batch), version))
    return jobs


def _emitter(framework: str, version: str | None) -> str:
    return "torchtitan-toml" if framework == "torchtitan" and version == "0.2" else framework


@pytest.mark.parametrize("framework", ["megatron", "deepspeed", "torchtitan"])
def test_every_plan_the_search_returns_is_emitted_without_a_refusal(framework: str) -> None:
    load_emitters()
    planned = 0
    refused: list[str] = []
    for job in random_jobs(framework):
        request = PlanRequest(
            model=job.model,
            cluster=load_cluster("dgx-h100", gpus=job.gpus),
            workload=WorkloadSpec(seq_len=job.seq_len, global_batch=job.global_batch),
            framework=framework,
            framework_version=job.version,
            top_k=TOP_K,
            time_limit_s=TIME_LIMIT_S,
        )
        try:
            result = plan(request)
        except (Infeasible, TimeLimitReached):
            continue  # nothing to emit
        planned += 1
        for rank, entry in enumerate(result.plans, start=1):
            plan_input = emit_input_from_estimate(entry.model_dump(mode="json"))
            try:
                emit(plan_input, format=_emitter(framework, job.version))
            except EmitError as error:
                refused.append(f"{job}, plan {rank}: {error}")
    assert not refused, "\n".join(refused)
    assert planned >= JOBS // 2, f"only {planned} of {JOBS} jobs had a plan"


def test_the_issue_examples_plan_what_their_emitters_write() -> None:
    """DeepSpeed on Llama-3.1-70B (the search picked CP with PP, which DeepSpeed's pipeline
    cannot join) and torchtitan 0.3.0 (it picked the ring, which 0.3.0 does not run)."""
    load_emitters()
    cluster = load_cluster("dgx-h100", gpus=64)
    workload = WorkloadSpec(seq_len=8192, global_batch=512)
    model = next(e.spec for e in list_catalog_models() if e.spec.name == "llama-3.1-70b")
    for framework in ("deepspeed", "torchtitan"):
        result = plan(
            PlanRequest(model=model, cluster=cluster, workload=workload, framework=framework)
        )
        for entry in result.plans:
            layout = entry.config
            if framework == "deepspeed":
                assert layout.tp == 1 and not (layout.cp > 1 and layout.pp > 1)
            else:
                assert layout.cp == 1 or layout.cp_comm_type == "all_gather"
            emit(emit_input_from_estimate(entry.model_dump(mode="json")), format=framework)
