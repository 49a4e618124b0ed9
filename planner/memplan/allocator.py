"""A simulation of PyTorch's CUDA caching allocator: how much it reserves for a trace.

Our own code, written from the documented behaviour of ``c10/cuda/CUDACachingAllocator.cpp``
(PyTorch 2.x; the constants have kept their values since 1.x):

* Every request is rounded up to a multiple of 512 bytes (``kMinBlockSize``); smaller
  requests take 512.
* Requests of at most 1 MiB (``kSmallSize``) use the small pool, larger ones the large
  pool; pools are per stream, and a freed block is reused only by the same stream's
  requests.
* A request takes the smallest free block of its pool that is at least as large (best
  fit; ties by address). With none, a new segment is allocated (``cudaMalloc``): 2 MiB
  (``kSmallBuffer``) for a small request, 20 MiB (``kLargeBuffer``) for a request under
  10 MiB (``kMinLargeAlloc``), else the request rounded up to 2 MiB (``kRoundLarge``).
* A block larger than the request is split when the rest can serve another request: in
  the small pool when the rest is at least 512 bytes, in the large pool when it is more
  than 1 MiB; otherwise the whole block is handed out (and counted as allocated).
* A freed block merges with free neighbours of its segment. Segments are never returned
  (only ``empty_cache`` or an out-of-memory retry does that), so reserved memory only
  grows: its peak is what ``torch.cuda.max_memory_reserved`` reports.
* Expandable segments (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``): one segment
  per stream and pool, a large virtual range mapped on demand in pages of 2 MiB (small
  pool) or 20 MiB (large pool). The free block at the end of the mapped range counts as
  unbounded for best fit (a request takes any other fitting block first); when nothing
  fits, the end is extended by mapping just enough pages. Blocks split whenever the rest
  is at least 512 bytes.

Not modelled (all off by default): ``max_split_size_mb``, ``roundup_power2_divisions``,
``garbage_collection_threshold``, CUDA graph pools, cross-stream frees (``record_stream``),
and running out of memory (the simulation has no capacity).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

from planner.memplan.trace import TraceEvent

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_BUFFER = 2 << 20
LARGE_BUFFER = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(size: int) -> int:
    """The block size of a request (``round_size``)."""
    return MIN_BLOCK if size < MIN_BLOCK else -(-size // MIN_BLOCK) * MIN_BLOCK


def allocation_size(size: int) -> int:
    """The segment a new ``cudaMalloc`` gets for a block of ``size`` (``get_allocation_size``)."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class _Block:
    __slots__ = ("free", "next", "offset", "prev", "segment", "size", "small", "stream")

    def __init__(self, segment: int, offset: int, size: int, stream: int, small: bool) -> None:
        self.segment, self.offset, self.size = segment, offset, size
        self.stream, self.small = stream, small
        self.free = True
        self.prev: _Block | None = None
        self.next: _Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


@dataclass(frozen=True)
class AllocatorResult:
    """What the simulated allocator reached over a trace (bytes)."""

    expandable_segments: bool
    peak_reserved: int
    peak_allocated: int
    """Peak of the blocks handed out (``max_memory_allocated``: rounded, unsplit rests)."""
    segments: int


Pool = list[tuple[int, int, int]]


class CachingAllocator:
    """The simulation; feed it events with :meth:`alloc` and :meth:`free`."""

    def __init__(self, *, expandable_segments: bool = False) -> None:
        self.expandable = expandable_segments
        self._pools: dict[tuple[int, bool], Pool] = {}
        self._by_key: dict[tuple[int, int, int], _Block] = {}
        self._live: dict[int, _Block] = {}
        self._tails: dict[tuple[int, bool], _Block] = {}
        """Expandable segments: the last block of each (stream, pool) segment."""
        self._mapped: dict[tuple[int, bool], tuple[int, int]] = {}
        """Expandable segments: (segment id, mapped bytes) of each (stream, pool)."""
        self.segments = 0
        self.reserved = self.allocated = 0
        self.peak_reserved = self.peak_allocated = 0

    def _pool(self, block: _Block) -> Pool:
        return self._pools.setdefault((block.stream, block.small), [])

    def _insert(self, block: _Block) -> None:
        block.free = True
        insort(self._pool(block), block.key())
        self._by_key[block.key()] = block

    def _remove(self, block: _Block) -> None:
        pool = self._pool(block)
        pool.pop(bisect_left(pool, block.key()))
        del self._by_key[block.key()]
        block.free = False

    def _reserve(self, size: int) -> None:
        self.reserved += size
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _find(self, size: int, stream: int, small: bool) -> _Block | None:
        """The best-fit free block; with expandable segments the open end block last."""
        pool = self._pools.get((stream, small), [])
        index = bisect_left(pool, (size, -1, -1))
        if index >= len(pool):
            return None
        tail = self._tails.get((stream, small)) if self.expandable else None
        for key in pool[index:]:  # any other fitting block before the open end
            if self._by_key[key] is not tail:
                return self._by_key[key]
        return self._by_key[pool[index]]

    def _new_segment(self, size: int, stream: int, small: bool) -> _Block:
        self.segments += 1
        self._reserve(size)
        block = _Block(self.segments, 0, size, stream, small)
        block.free = False
        return block

    def _grow(self, size: int, stream: int, small: bool) -> _Block:
        """Expandable segments: map pages at the end until a free end block holds ``size``."""
        where = (stream, small)
        page = SMALL_BUFFER if small else LARGE_BUFFER
        if where not in self._mapped:
            self.segments += 1
            self._mapped[where] = (self.segments, 0)
        segment, end = self._mapped[where]
        tail = self._tails.get(where)
        if tail is not None and tail.free:
            self._remove(tail)
            mapped = -(-(size - tail.size) // page) * page
            tail.size += mapped
            block = tail
        else:
            mapped = -(-size // page) * page
            block = _Block(segment, end, mapped, stream, small)
            block.free = False
            block.prev = tail
            if tail is not None:
                tail.next = block
            self._tails[where] = block
        self._mapped[where] = (segment, end + mapped)
        self._reserve(mapped)
        return block

    def _split(self, block: _Block, size: int) -> None:
        rest = block.size - size
        if not (rest >= MIN_BLOCK if block.small or self.expandable else rest > SMALL_SIZE):
            return
        remainder = _Block(block.segment, block.offset + size, rest, block.stream, block.small)
        remainder.prev, remainder.next = block, block.next
        if block.next is not None:
            block.next.prev = remainder
        block.next, block.size = remainder, size
        if self._tails.get((block.stream, block.small)) is block:
            self._tails[(block.stream, block.small)] = remainder
        self._insert(remainder)

    def alloc(self, key: int, size: int, stream: int = 0) -> None:
        size = round_size(size)
        small = size <= SMALL_SIZE
        block = self._find(size, stream, small)
        if block is not None:
            self._remove(block)
        elif self.expandable:
            block = self._grow(size, stream, small)
        else:
            block = self._new_segment(allocation_size(size), stream, small)
        self._split(block, size)
        self._live[key] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, key: int) -> None:
        """Return ``key``'s block; an unknown key (allocated before the trace) is ignored."""
        block = self._live.pop(key, None)
        if block is None:
            return
        self.allocated -= block.size
        where = (block.stream, block.small)
        before, after = block.prev, block.next
        if after is not None and after.free:  # absorb the next block
            self._remove(after)
            block.size += after.size
            block.next = after.next
            if after.next is not None:
                after.next.prev = block
            if self._tails.get(where) is after:
                self._tails[where] = block
        if before is not None and before.free:  # the previous block absorbs this one
            self._remove(before)
            before.size += block.size
            before.next = block.next
            if block.next is not None:
                block.next.prev = before
            if self._tails.get(where) is block:
                self._tails[where] = before
            block = before
        self._insert(block)

    def result(self) -> AllocatorResult:
        return AllocatorResult(
            self.expandable, self.peak_reserved, self.peak_allocated, self.segments
        )


def simulate(events: tuple[TraceEvent, ...], *, expandable_segments: bool) -> AllocatorResult:
    """Replay ``events`` through the simulated allocator."""
    allocator = CachingAllocator(expandable_segments=expandable_segments)
    for event in events:
        if event.op == "alloc":
            allocator.alloc(event.key, event.size, event.stream)
        else:
            allocator.free(event.key)
    return allocator.result()
