"""Launch files that carry a memory plan's recompute/offload setting
(``autopar memplan --budget-gib B --emit FORMAT``).

The layout is estimated again with the setting's recomputation (so the files' predictions
are the layout's as launched), then written by the emitter with the rest of the setting
(``planner.emit.ActivationMemory``: activation offload, every k-th block) and the note of
what was mapped to the framework's nearest setting.
"""

from __future__ import annotations

from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.emit import ActivationMemory, emit_files
from planner.errors import SpecError
from planner.memplan.plan import MemoryPlan
from planner.predict import assemble, memory_stages, prepare, time_report
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec


def check_launch_layout(layout: ParallelConfig, *, budget_gib: float | None) -> None:
    """Before solving: ``--emit`` writes the budget's choice, so it needs a budget and a
    layout that leaves the recomputation to it."""
    if budget_gib is None:
        raise SpecError("--emit: needs --budget-gib (the setting comes from the budget's choice)")
    if layout.recompute != "none":
        raise SpecError(
            f"--emit: the budget chooses the recomputation; drop --recompute {layout.recompute}"
        )


def launch_files(
    result: MemoryPlan,
    *,
    emitter: str,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    layout: ParallelConfig,
    framework: Framework = "megatron",
    state_layout_name: str | None = None,
    flash_attention: bool = True,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> dict[str, str]:
    """File name -> contents of ``emitter``'s launch files with ``result``'s setting.

    Raises ``SpecError`` where the plan has no budget, planned only some stages, or no
    setting of the framework fits the budget; ``EmitError`` where the emitter refuses.
    """
    budget = result.stages[0].budget if result.stages else None
    check_launch_layout(layout, budget_gib=None if budget is None else budget.budget_gib)
    assert budget is not None
    budget_gib = budget.budget_gib
    if len(result.stages) != layout.pp:
        raise SpecError("--emit: the setting holds for every stage: drop --stage")
    setting = result.framework_settings.get(emitter)
    if setting is None:
        raise SpecError(
            f"--emit {emitter}: not every stage fits {budget_gib:g} GiB with any choice "
            "(the stages' budget lines say where)"
        )
    if not setting.fits:
        raise SpecError(
            f"--emit {emitter}: no {emitter} setting fits {budget_gib:g} GiB (the most "
            f"memory-saving, {setting.flags}, peaks at {setting.peak_gib:.2f} GiB)"
        )
    prepared = prepare(
        model=model, cluster=cluster, workload=workload, layout=setting.layout(layout),
        framework=framework, state_layout_name=state_layout_name,
        flash_attention=flash_attention, runtime=runtime, layer_spec=layer_spec,
    )  # fmt: skip
    estimate = assemble(prepared, memory_stages(prepared), time_report(prepared))
    memory = ActivationMemory(
        budget_gib=budget_gib,
        peak_gib=setting.peak_gib,
        added_time_s=setting.added_time_s,
        offload_layers=setting.offload_layers,
        every_nth_layer=setting.every_nth_layer,
        mapped=setting.mapped,
    )
    return emit_files(estimate.model_dump(mode="json"), format=emitter, activation_memory=memory)
