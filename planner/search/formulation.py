"""The planner's choice as a factorised CP-SAT model (``solvers.degrees``) over layout axes.

Data: the tabulated layouts that fit and that the objective admits (rows r), each with its
values on the axes below and an integer objective o_r (``planner.search.objectives``).

Axes (one integer variable each, with the values the rows take):
  gpus        cluster size (one value unless the objective searches sizes)
  tp, cp, pp, dp, ep, mbs    the degrees and the micro-batch size
  vpp         virtual stages per pipeline rank, 1 for the plain schedule
  recompute   0 none, 1 selective, 2 full
  recompute_layers   layers per full-recompute group or block (0 unless full)
  recompute_block    0 uniform groups, 1 the first layers of each stage (Megatron "block")
  cp_comm     the context-parallel algorithm: 0 p2p ring, 1 all_gather, 2 a2a (Ulysses),
              3 a2a+p2p
  cp_a2a      CP ranks each all-to-all spans (``ParallelConfig.cp_a2a_size``): cp under
              a2a, the a2a group size under a2a+p2p, 1 otherwise
  first, last layers on the first and last pipeline stage (0: the even split)
  accounted   Megatron-LM's account-for split: 1 the embedding, 2 the output layer, 3
              both counted as a layer when splitting (0: neither)

Constraints:
  (1) tp·cp·pp·dp = gpus (``ProductConstraint``; gpus is a constant or the gpus axis).
  (2) The objective, one cost factor over all axes, tabulated per row and selected by the
      row index with ``add_element`` (``solvers.degrees`` (3)): a combination without a row
      (illegal under the framework rules, out of memory, or not admitted) is forbidden.

Objective: minimise c_r = o_r·N + t_r, N the number of rows and t_r < N the row's rank by
(peak memory, enumeration order), so ties in the objective go to the layout with more
headroom, deterministically.

Why the objective is one factor over all axes: it is not separable. The step time comes
from simulating the pipeline schedule, which couples pp, vpp and the micro-batch count
B/(dp·mbs), from stage times that depend on tp, cp, mbs, recompute and the split, so no
sum of terms over fewer axes reproduces it; tabulating it per layout is what makes the
optimum exact under the cost model. The factorisation is in the variables: the solver's
top-k cuts, hints and the product constraint work on the knobs themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.search.objectives import Objective
from planner.search.tabulate import Row
from planner.specs.layout import ParallelConfig
from solvers import Axis, CostFactor, DegreesProblem, ProductConstraint

RECOMPUTE = ("none", "selective", "full")
CP_COMM = ("p2p", "all_gather", "a2a", "a2a+p2p")
AXES = (
    "gpus",
    "tp",
    "cp",
    "pp",
    "dp",
    "ep",
    "vpp",
    "mbs",
    "recompute",
    "recompute_layers",
    "recompute_block",
    "cp_comm",
    "cp_a2a",
    "first",
    "last",
    "accounted",
)


def axis_values(row: Row) -> tuple[int, ...]:
    """A row's value on every axis, in ``AXES`` order."""
    return layout_axis_values(row.layout, gpus=row.cluster.num_gpus)


def layout_axis_values(layout: ParallelConfig, *, gpus: int) -> tuple[int, ...]:
    """``axis_values`` of a resolved layout (``dp`` set) on ``gpus`` GPUs."""
    assert layout.dp is not None
    return (
        gpus,
        layout.tp,
        layout.cp,
        layout.pp,
        layout.dp,
        layout.ep,
        layout.vpp or 1,
        layout.mbs,
        RECOMPUTE.index(layout.recompute),
        layout.recompute_num_layers or 0,
        int(layout.recompute_method == "block"),
        CP_COMM.index(layout.cp_comm_type),
        layout.cp_a2a_size,
        layout.first_stage_layers or 0,
        layout.last_stage_layers or 0,
        int(layout.account_for_embedding_in_pipeline_split)
        + 2 * int(layout.account_for_loss_in_pipeline_split),
    )


@dataclass(frozen=True)
class Formulation:
    problem: DegreesProblem
    rows: dict[tuple[int, ...], Row]
    """Axis values -> row."""

    def decode(self, assignment: dict[str, int]) -> Row:
        return self.rows[tuple(assignment[name] for name in AXES)]


def formulate(rows: list[Row], *, objective: Objective, top_k: int) -> Formulation:
    """The model of the module docstring over ``rows`` (each fits and is admitted)."""
    sizes = sorted({row.cluster.num_gpus for row in rows})
    slowest_us = max(round(row.step_s * 1_000_000) for row in rows)
    primary = [objective.primary(row, sizes=sizes, slowest_us=slowest_us) for row in rows]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].peak_gib, i))
    tie_rank = {i: rank for rank, i in enumerate(order)}
    scale = len(rows)
    keyed: dict[tuple[int, ...], Row] = {}
    costs: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(rows):
        key = axis_values(row)
        if key in keyed:
            raise AssertionError(f"two candidate layouts share the axis values {key}")
        keyed[key] = row
        costs[key] = primary[i] * scale + tie_rank[i]
    axes = tuple(
        Axis(name, tuple(sorted({key[j] for key in keyed}))) for j, name in enumerate(AXES)
    )
    if len(sizes) == 1:
        product = ProductConstraint(("tp", "cp", "pp", "dp"), sizes[0])
    else:
        product = ProductConstraint(("tp", "cp", "pp", "dp"), equals_axis="gpus")
    best = min(costs, key=costs.__getitem__)
    problem = DegreesProblem(
        axes=axes,
        products=(product,),
        factors=(CostFactor(AXES, costs),),
        top_k=min(top_k, len(rows)),
        hint=dict(zip(AXES, best, strict=True)),
    )
    return Formulation(problem=problem, rows=keyed)
