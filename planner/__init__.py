"""autopar's planner: specs, model graph, cost model, search and interfaces.

Public Python API (the CLI and the REST service are thin layers over these)::

    from planner import catalog_model, load_model, load_cluster, count_params
    spec = load_model("llama-3.1-70b")
    count_params(spec).total            # 70_553_706_496
    estimate(model=spec, cluster=load_cluster("dgx-h100", nodes=8),
             workload=WorkloadSpec(seq_len=8192, global_batch=512),
             layout=ParallelConfig(tp=8, pp=4)).memory.fits
    estimate_entry(plan(request).plans[0])  # a plan entry again, with every knob it chose
    memplan(model=spec, cluster=..., workload=..., layout=..., budget_gib=60)  # memory reuse
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("CatalogModel", "catalog_model", "import_hf_config", "list_catalog_models",
         "load_cluster", "load_gpu", "load_link", "load_model"),
        "planner.catalog",
    ),
    **dict.fromkeys(
        ("AutoparError", "ImportFormatError", "Infeasible", "SpecError", "UnknownNameError"),
        "planner.errors",
    ),
    **dict.fromkeys(
        ("ParamCounts", "count_params", "training_flops_per_token"), "planner.graph.params"
    ),
    **dict.fromkeys(("PlanOutcome", "PlanRequest", "PlanResult", "plan"), "planner.plan"),
    **dict.fromkeys(("MemoryPlan", "memplan", "memplan_snapshot"), "planner.memplan"),
    **dict.fromkeys(("Estimate", "estimate"), "planner.predict"),
    **dict.fromkeys(("estimate_entry", "read_plan_entry"), "planner.plan_file"),
    **dict.fromkeys(("ScatterResult", "scatter"), "planner.scattering"),
    **dict.fromkeys(
        ("ExpertPlacementResult", "RoutingStats", "place_experts"), "planner.experts"
    ),
    **dict.fromkeys(
        ("ClusterSpec", "GPUSpec", "LinkSpec", "MLASpec", "ModelSpec", "MoESpec",
         "OptimizerSpec", "ParallelConfig", "PeakTflops", "WorkloadSpec"),
        "planner.specs",
    ),
}  # fmt: skip
"""Each public name and the module it lives in: imported on first use (PEP 562), so that
``import planner.cli.app`` (``autopar --help``) does not load the solvers and the cost
model."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from planner.catalog import (
        CatalogModel,
        catalog_model,
        import_hf_config,
        list_catalog_models,
        load_cluster,
        load_gpu,
        load_link,
        load_model,
    )
    from planner.errors import (
        AutoparError,
        ImportFormatError,
        Infeasible,
        SpecError,
        UnknownNameError,
    )
    from planner.experts import ExpertPlacementResult, RoutingStats, place_experts
    from planner.graph.params import ParamCounts, count_params, training_flops_per_token
    from planner.memplan import MemoryPlan, memplan, memplan_snapshot
    from planner.plan import PlanOutcome, PlanRequest, PlanResult, plan
    from planner.plan_file import estimate_entry, read_plan_entry
    from planner.predict import Estimate, estimate
    from planner.scattering import ScatterResult, scatter
    from planner.specs import (
        ClusterSpec,
        GPUSpec,
        LinkSpec,
        MLASpec,
        ModelSpec,
        MoESpec,
        OptimizerSpec,
        ParallelConfig,
        PeakTflops,
        WorkloadSpec,
    )

__all__ = [
    "AutoparError",
    "CatalogModel",
    "ClusterSpec",
    "Estimate",
    "ExpertPlacementResult",
    "GPUSpec",
    "ImportFormatError",
    "Infeasible",
    "LinkSpec",
    "MLASpec",
    "MemoryPlan",
    "MoESpec",
    "ModelSpec",
    "OptimizerSpec",
    "ParallelConfig",
    "ParamCounts",
    "PeakTflops",
    "PlanOutcome",
    "PlanRequest",
    "PlanResult",
    "RoutingStats",
    "ScatterResult",
    "SpecError",
    "UnknownNameError",
    "WorkloadSpec",
    "catalog_model",
    "count_params",
    "estimate",
    "estimate_entry",
    "import_hf_config",
    "list_catalog_models",
    "load_cluster",
    "load_gpu",
    "load_link",
    "load_model",
    "memplan",
    "memplan_snapshot",
    "place_experts",
    "plan",
    "read_plan_entry",
    "scatter",
    "training_flops_per_token",
]
