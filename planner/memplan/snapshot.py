"""Read a ``torch.cuda.memory._dump_snapshot`` file without torch.

The file is a pickle (optionally gzip-compressed) of plain data: a dict with ``segments``
(each ``address``, ``total_size``, ``stream``, ``segment_type``, ``is_expandable``,
``blocks`` of ``size``/``requested_size``/``state``) and ``device_traces`` (one list per
device of events ``action``, ``addr``, ``size``, ``stream``; actions ``alloc``,
``free_requested``, ``free_completed``, ``segment_alloc``/``segment_free``, and with
expandable segments ``segment_map``/``segment_unmap``; also ``oom``, ``snapshot``), plus
``allocator_settings`` in recent versions.

A pickle can name any importable callable, so the unpickler here refuses every global:
the file is read only when it is plain containers, strings and numbers. An allocation
becomes free for reuse at ``free_completed`` (``free_requested`` only marks it awaiting
its stream's events), so the trace frees there. Addresses are reused, so each ``alloc``
gets a fresh key. Frees of blocks allocated before recording began are counted and left
out (their allocations are not in the trace).
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import SpecError
from planner.memplan.trace import TraceEvent

GZIP_MAGIC = b"\x1f\x8b"


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles containers, strings and numbers only: every global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"the pickle refers to {module}.{name}; a memory snapshot holds plain data only"
        )


@dataclass(frozen=True)
class Snapshot:
    """The parts of a snapshot the analysis reads (bytes)."""

    source: str
    device: int
    events: tuple[TraceEvent, ...]
    trace_reserved_peak: int
    """Peak of the segments the trace itself allocated or mapped, less those it freed."""
    reserved_at_dump: int
    allocated_at_dump: int
    expandable_segments: bool
    untracked_frees: int
    """Frees of blocks allocated before recording began (not in ``events``)."""
    actions: dict[str, int]


def load_pickle(path: Path) -> Any:
    """The snapshot's data, read with the restricted unpickler."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(f"--snapshot: cannot read {path}: {error.strerror}") from None
    try:
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, gzip.BadGzipFile, ValueError) as error:
        raise SpecError(f"--snapshot: {path} is not a memory snapshot pickle: {error}") from None


def read_snapshot(path: Path, *, device: int | None = None) -> Snapshot:
    """The allocation trace of ``device`` (default: the one with the most events)."""
    data = load_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("device_traces"), list):
        raise SpecError(
            f"--snapshot: {path} has no 'device_traces' list; write it with "
            "torch.cuda.memory._record_memory_history() then _dump_snapshot()"
        )
    traces = data["device_traces"]
    if device is None:
        device = max(range(len(traces)), key=lambda d: len(traces[d]), default=0)
    if not 0 <= device < len(traces) or not traces[device]:
        raise SpecError(f"--snapshot: {path} has no recorded events for device {device}")
    segments = [s for s in data.get("segments", []) if s.get("device", device) == device]
    events, actions, untracked, reserved_peak = _events(traces[device])
    settings = data.get("allocator_settings") or {}
    expandable = bool(
        settings.get("expandable_segments", any(s.get("is_expandable") for s in segments))
    )
    return Snapshot(
        source=str(path),
        device=device,
        events=events,
        trace_reserved_peak=reserved_peak,
        reserved_at_dump=sum(int(s.get("total_size", 0)) for s in segments),
        allocated_at_dump=sum(int(s.get("allocated_size", 0)) for s in segments),
        expandable_segments=expandable,
        untracked_frees=untracked,
        actions=actions,
    )


def _events(
    trace: list[dict[str, Any]],
) -> tuple[tuple[TraceEvent, ...], dict[str, int], int, int]:
    """(alloc/free events, count per action, untracked frees, trace reserved peak)."""
    events: list[TraceEvent] = []
    actions: dict[str, int] = {}
    by_address: dict[int, int] = {}
    untracked = reserved = peak = 0
    for entry in trace:
        action = str(entry.get("action"))
        actions[action] = actions.get(action, 0) + 1
        address, size = int(entry.get("addr", 0)), int(entry.get("size", 0))
        stream = int(entry.get("stream", 0))
        if action == "alloc":
            key = len(events)
            by_address[address] = key
            events.append(TraceEvent("alloc", key, size, stream))
        elif action == "free_completed":
            key = by_address.pop(address, -1)
            if key < 0:
                untracked += 1
                continue
            events.append(TraceEvent("free", key, stream=stream))
        elif action in ("segment_alloc", "segment_map"):
            reserved += size
            peak = max(peak, reserved)
        elif action in ("segment_free", "segment_unmap"):
            reserved -= size
    return tuple(events), actions, untracked, peak
