"""Where the sequence lengths come from: a file of the user's, or a shipped distribution.

A file holds one length per line (one batch), or JSON: a list of lengths (one batch) or a
list of lists (several batches). A distribution (``data/<name>.toml``, each citing its
source) is sampled with a seed: ``percentiles`` by inverting the CDF the percentile points
give, linear in log(tokens) between neighbouring points; ``uniform`` on
``low..max_seq_len``; ``fixed`` at ``max_seq_len``. A batch is documents drawn until their
tokens reach the global batch. With a maximum sequence length, a longer document is cut
into pieces of at most that many tokens, as pretraining pipelines do.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from planner.errors import SpecError, UnknownNameError

DEFAULT_MAX_SEQ_LEN = 32768
"""Cut for sampled documents when none is given (the distributions' tails reach 1.8M)."""
DEFAULT_GLOBAL_BATCH_TOKENS = 2**20
MAX_SEQUENCES = 100_000
"""Most sequences read or sampled per batch (a bound on the solver's input)."""


@dataclass(frozen=True)
class Distribution:
    name: str
    kind: str
    description: str
    source: str
    percentiles: tuple[tuple[float, int], ...] = ()
    low: int = 1


def _data() -> resources.abc.Traversable:
    return resources.files("planner.scattering") / "data"


def list_distributions() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml") for p in _data().iterdir() if p.name.endswith(".toml")
    )


def load_distribution(name: str) -> Distribution:
    path = _data() / f"{name}.toml"
    if not path.is_file():
        raise UnknownNameError(
            f"length-dist: unknown '{name}'; known: {', '.join(list_distributions())}"
        )
    raw = tomllib.loads(path.read_text())
    return Distribution(
        name=raw["name"],
        kind=raw["kind"],
        description=raw["description"],
        source=raw["source"],
        percentiles=tuple((float(p), int(t)) for p, t in raw.get("percentiles", [])),
        low=int(raw.get("low", 1)),
    )


def sample_lengths(
    dist: Distribution, count: int, *, max_seq_len: int, rng: np.random.Generator
) -> list[int]:
    """``count`` document lengths, before cutting at ``max_seq_len``."""
    if dist.kind == "fixed":
        return [max_seq_len] * count
    if dist.kind == "uniform":
        return [int(x) for x in rng.integers(dist.low, max_seq_len + 1, size=count)]
    cdf = np.array([p / 100 for p, _ in dist.percentiles])
    logs = np.log(np.array([t for _, t in dist.percentiles], dtype=float))
    drawn = np.exp(np.interp(rng.random(count), cdf, logs))
    # np.rint rounds half to even, as round() does: the same lengths, a million in 20 ms
    return np.maximum(1, np.rint(drawn)).astype(np.int64).tolist()


def cut(lengths: list[int], max_seq_len: int | None) -> list[int]:
    """Documents longer than ``max_seq_len`` become pieces of at most that many tokens."""
    if max_seq_len is None:
        return list(lengths)
    pieces = []
    for length in lengths:
        whole, rest = divmod(length, max_seq_len)
        pieces += [max_seq_len] * whole + ([rest] if rest else [])
    return pieces


def sample_batches(
    name: str,
    *,
    batches: int,
    global_batch_tokens: int,
    max_seq_len: int | None,
    seed: int,
) -> list[list[int]]:
    """``batches`` batches of at least ``global_batch_tokens`` tokens each."""
    dist = load_distribution(name)
    limit = max_seq_len or DEFAULT_MAX_SEQ_LEN
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        batch: list[int] = []
        total = 0
        while total < global_batch_tokens:
            for piece in cut(sample_lengths(dist, 64, max_seq_len=limit, rng=rng), limit):
                batch.append(piece)
                total += piece
                if total >= global_batch_tokens:
                    break
            if len(batch) > MAX_SEQUENCES:
                raise SpecError(
                    f"global_batch_tokens: {global_batch_tokens} tokens of '{name}' need more "
                    f"than {MAX_SEQUENCES} sequences per batch"
                )
        out.append(batch)
    return out


def _number(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"seq-lengths: {where} is not a number: {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise SpecError(f"seq-lengths: {where} is not a whole number of tokens: {text!r}")
    return check_length(int(value), where)


def check_length(value: int, where: str) -> int:
    if value <= 0:
        raise SpecError(f"seq-lengths: {where} must be a positive number of tokens, got {value}")
    return value


def read_lengths_file(path: str | Path) -> list[list[int]]:
    """Batches of lengths from a file (module docstring); one-line errors naming the place."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise SpecError(f"seq-lengths: cannot read {path}: {error.strerror}") from None
    if not text.strip():
        raise SpecError(f"seq-lengths: {path} is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"seq-lengths: {path} is not valid JSON ({error.msg})") from None
        return parse_batches(data)
    batch = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            batch.append(_number(line.strip(), f"line {number}"))
    return [batch]


def parse_batches(data: object) -> list[list[int]]:
    """A JSON list of lengths (one batch) or a list of lists (batches), validated."""
    if not isinstance(data, list) or not data:
        raise SpecError("seq-lengths: expected a non-empty list of lengths or of batches")
    raw = data if all(isinstance(b, list) for b in data) else [data]
    batches = []
    for b, batch in enumerate(raw):
        if not batch:
            raise SpecError(f"seq-lengths: batch {b} is empty")
        if len(batch) > MAX_SEQUENCES:
            raise SpecError(f"seq-lengths: batch {b} has more than {MAX_SEQUENCES} sequences")
        lengths = []
        for i, value in enumerate(batch):
            where = f"batch {b} item {i}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"seq-lengths: {where} is not a number: {value!r}")
            lengths.append(_number(str(value), where))
        batches.append(lengths)
    return batches
