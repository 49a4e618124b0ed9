"""What a report is drawn from: the JSON of ``autopar estimate`` or ``autopar plan``, alone.

The report reads nothing but that JSON (and the schedule simulation it replays from the
JSON's own per-stage times), so a stored plan draws the same pictures anywhere. The
layout and job fields it needs are parsed into ``JobView`` (typed, unknown keys ignored);
the memory and time blocks are the estimate's own report models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from planner.errors import SpecError
from planner.predict import MemoryReport, TimeReport


class JobView(BaseModel):
    """The job and the resolved layout of one plan, as its ``config`` block states them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    cluster: str
    gpu: str
    num_gpus: int
    nodes: int
    gpus_per_node: int
    seq_len: int
    global_batch: int
    precision: str
    framework: str
    microbatches: int
    tp: int
    pp: int
    dp: int
    cp: int
    ep: int = 1
    vpp: int | None = None
    mbs: int
    zero_stage: int = 0
    distributed_optimizer: bool = False
    sequence_parallel: bool = False
    recompute: str = "none"
    cp_comm_type: str | None = None
    hierarchical_cp_sizes: tuple[int, int] | None = None
    tp_comm_overlap: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    offload_optimizer_fraction: float = 0.0
    microbatch_group_size_per_vp_stage: int | None = None

    def layout_label(self) -> str:
        """The layout in the words the CLI's plan table uses."""
        parts = [f"tp {self.tp}", f"pp {self.pp}", f"dp {self.dp}", f"cp {self.cp}"]
        if self.cp > 1 and self.hierarchical_cp_sizes is not None:
            parts.append("(a2a {} x p2p {})".format(*self.hierarchical_cp_sizes))
        elif self.cp > 1 and self.cp_comm_type not in (None, "p2p"):
            parts.append(f"({self.cp_comm_type})")
        if self.ep > 1:
            parts.append(f"ep {self.ep}")
        if self.vpp and self.vpp > 1:
            parts.append(f"vpp {self.vpp}")
        parts += [f"mbs {self.mbs}", f"recompute {self.recompute}"]
        if self.zero_stage:
            parts.append(f"zero {self.zero_stage}")
        return " ".join(parts)

    def knobs(self) -> dict[str, object]:
        """The layout's knobs by name, for showing what differs between two plans."""
        names = (
            "tp",
            "pp",
            "dp",
            "cp",
            "ep",
            "vpp",
            "mbs",
            "zero_stage",
            "distributed_optimizer",
            "sequence_parallel",
            "recompute",
            "cp_comm_type",
            "hierarchical_cp_sizes",
            "tp_comm_overlap",
            "overlap_grad_reduce",
            "overlap_param_gather",
            "offload_optimizer_fraction",
        )
        values = self.model_dump()
        return {name: values[name] for name in names}


class PlanView(BaseModel):
    """One plan (or estimate): its job and layout, memory per stage, step time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    config: JobView
    memory: MemoryReport
    time: TimeReport
    explanation: str | None = None


class ReportInput(BaseModel):
    """The plans to draw, best first, and the search summary when they came from a plan."""

    model_config = ConfigDict(frozen=True)

    plans: list[PlanView]
    search: dict[str, Any] | None = None


def read_report_input(data: object) -> ReportInput:
    """Parse ``autopar plan --json`` ({"plans": [...], "search": {...}}) or an estimate.

    Raises ``SpecError`` naming the first field that is missing or wrong.
    """
    if not isinstance(data, dict):
        raise SpecError(
            "plan file: expected a JSON object (autopar plan --json or autopar estimate "
            f"--json output), got a JSON {type(data).__name__}"
        )
    raw_plans = data.get("plans", [data])
    if not isinstance(raw_plans, list) or not raw_plans:
        raise SpecError("plan file: 'plans' must be a non-empty list of plans")
    search = data.get("search") if "plans" in data else None
    plans = []
    for index, plan in enumerate(raw_plans):
        try:
            plans.append(PlanView.model_validate(plan))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "plan"
            prefix = f"plans[{index}]." if "plans" in data else ""
            raise SpecError(f"plan file: {prefix}{where}: {first['msg']}") from None
    return ReportInput(plans=plans, search=search if isinstance(search, dict) else None)
