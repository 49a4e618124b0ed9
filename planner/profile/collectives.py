"""Collective and point-to-point timings across the processes of a ``torchrun`` launch.

Every process runs every point (so all take part in the same collective calls in the
same order); a point over ``g`` ranks uses ranks 0..g-1 (a ``new_group``, or the world),
the others wait. Per point:

1. members run the warm-up; the repeat count is agreed from the slowest member's last
   warm-up (an all-reduce of the guess over the world), so every member calls the
   collective the same number of times;
2. members time each repeat (CUDA events on GPUs, the clock on CPUs);
3. rank 0 gathers every member's times and keeps, per repeat, the slowest rank's: a
   collective is done when its last rank is done.

Operations (bf16 buffers; sizes are nccl-tests' ``S``, see ``planner.cost.comm``):
``all_reduce`` in place on S bytes; ``all_gather_into_tensor`` from S/g to S;
``reduce_scatter_tensor`` from S to S/g (torch 2.13 renames these two ``all_gather_single``
and ``reduce_scatter_single``; the new names are used where they exist);
``all_to_all_single`` of S to S; ``send_recv`` rank 0 sends S bytes to rank 1
(``dist.send``/``dist.recv``). Scope is ``intra_node``
when the g ranks fit in one node (``LOCAL_WORLD_SIZE``, torchrun's consecutive ranks),
``inter_node`` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from planner.cost.profile_schema import CollectiveRow
from planner.profile.grid import CollectivePoint
from planner.profile.timing import Timer, summarize

ELEMENT_BYTES = 2  # bf16


class Collectives:
    """The process groups of one launch and the timing of points over them."""

    def __init__(self, torch: Any, timer: Timer, group_sizes: list[int]) -> None:
        self.torch = torch
        self.dist = torch.distributed
        self.timer = timer
        self.rank = self.dist.get_rank()
        self.world = self.dist.get_world_size()
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        self.backend = str(self.dist.get_backend())
        # new_group is itself collective: every rank creates every group, in one order
        self.groups = {
            g: None if g == self.world else self.dist.new_group(list(range(g)))
            for g in sorted(set(group_sizes) | {2})
        }

    def any_rank(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (an all-reduce of the flag)."""
        value = self.torch.tensor([float(flag)], device=self.timer.device)
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX)
        return bool(value.item())

    def _op(self, point: CollectivePoint) -> tuple[Callable[[], Any], int]:
        """The member's operation and the size S it really moves (divisible by g)."""
        torch, dist, g = self.torch, self.dist, point.group_size
        group = self.groups[g]
        elements = max(point.bytes // ELEMENT_BYTES // g, 1) * g
        device = self.timer.device

        def buffer(n: int) -> Any:
            return torch.zeros(n, device=device, dtype=torch.bfloat16)

        if point.op == "all_reduce":
            x = buffer(elements)
            return lambda: dist.all_reduce(x, group=group), elements * ELEMENT_BYTES
        if point.op == "all_gather":
            full, part = buffer(elements), buffer(elements // g)
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            return lambda: gather(full, part, group=group), elements * ELEMENT_BYTES
        if point.op == "reduce_scatter":
            full, part = buffer(elements), buffer(elements // g)
            scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
            return lambda: scatter(part, full, group=group), elements * ELEMENT_BYTES
        if point.op == "all_to_all":
            send, recv = buffer(elements), buffer(elements)
            return lambda: dist.all_to_all_single(recv, send, group=group), elements * ELEMENT_BYTES
        elements = max(point.bytes // ELEMENT_BYTES, 1)
        message = buffer(elements)
        if self.rank == 0:
            return lambda: dist.send(message, dst=1), elements * ELEMENT_BYTES
        return lambda: dist.recv(message, src=0), elements * ELEMENT_BYTES

    def measure(self, point: CollectivePoint) -> CollectiveRow | None:
        """Time ``point``; the row on rank 0, None on the other ranks."""
        torch, dist = self.torch, self.dist
        member = self.rank < point.group_size
        guess = 0.0
        if member:
            op, size = self._op(point)
            guess = self.timer.warm(op)
        agreed = torch.tensor([guess], device=self.timer.device, dtype=torch.float64)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        repeats = self.timer.repeats_for(float(agreed.item()))
        times = self.timer.times(op, repeats) if member else []
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, times)
        if self.rank != 0:
            return None
        slowest = [max(ranks) for ranks in zip(*gathered[: point.group_size], strict=True)]
        scope = "intra_node" if point.group_size <= self.local_world else "inter_node"
        return CollectiveRow(
            op=point.op, group_size=point.group_size, bytes=size, dtype="bf16",
            backend=self.backend, scope=scope, time=summarize(slowest),
        )  # fmt: skip
