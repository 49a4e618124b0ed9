"""Memory reuse: tensor lifetimes of a stage, the caching allocator simulated, a planned
placement, and what to recompute or offload under a budget (``memplan``), also on real
``torch.cuda.memory._dump_snapshot`` files (``memplan_snapshot``)."""

from planner.memplan.plan import (
    BudgetReport,
    MemoryPlan,
    PeakReport,
    StagePlan,
    memplan,
    memplan_snapshot,
)

__all__ = ["BudgetReport", "MemoryPlan", "PeakReport", "StagePlan", "memplan", "memplan_snapshot"]
