"""Sequence scattering: variable-length sequences on sequence-parallel groups of
different sizes (issue 16; the formulation is ``solvers.scatter``).

    from planner import load_model, load_cluster, scatter
    result = scatter(model=load_model("llama-3.1-8b"),
                     cluster=load_cluster("hgx-h200", gpus=64),
                     batches=[[512, 900, 31_000, 2_048]])
    result.batches[0].micro_batches[0].groups   # sizes, sequences, time, memory
"""

from planner.scattering.cost import SequenceCost, sequence_cost
from planner.scattering.lengths import (
    list_distributions,
    load_distribution,
    read_lengths_file,
    sample_batches,
)
from planner.scattering.result import (
    Baseline,
    BatchResult,
    CostInfo,
    MicroBatch,
    ScatterResult,
    ScatterSummary,
    SPGroup,
    Summary,
)
from planner.scattering.run import scatter

__all__ = [
    "Baseline",
    "BatchResult",
    "CostInfo",
    "MicroBatch",
    "SPGroup",
    "ScatterResult",
    "ScatterSummary",
    "SequenceCost",
    "Summary",
    "list_distributions",
    "load_distribution",
    "read_lengths_file",
    "sample_batches",
    "scatter",
    "sequence_cost",
]
