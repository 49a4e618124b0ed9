"""Measure the token lengths of source-code documents and write the ``code-files`` distribution.

No public source gives percentiles of code-document token lengths (FlexSP's GitHub sample
is in its repository's ``flexsp`` branch as ``galvatron/datasets/github.txt``, but that
file is too large for the snapshots this project can read), so this script measures them
on public repositories itself:

- **Document** = one source file at the repository's newest commit, as in the GitHub
  subsets of pretraining corpora (RedPajama's GitHub slice, The Stack): not a whole
  repository concatenated (the long-context recipes that do that build much longer
  documents).
- **Which files**: blobs whose name ends in a programming-language extension
  (``EXTENSIONS``), smaller than ``MAX_FILE_BYTES``, valid UTF-8 and without NUL bytes
  (text). Documentation, data and configuration files (Markdown, JSON, YAML, ...) are left
  out; tests written in a programming language stay in.
- **Tokens**: the Llama 3 tokenizer (128,256 tokens; ``tokenizer.model`` shipped in Meta's
  ``llama-models`` package on PyPI), the tokenizer of the project's default model
  (Llama-3.1-8B); no BOS/EOS added; special-token text encoded as plain text.

It writes ``planner/scattering/data/code-files.toml`` (the percentiles the sampler reads)
and ``benchmarks/data/code_lengths.json`` (provenance: repositories and commits, the
filter, the tokenizer's file hash, counts per repository and language, and a histogram of
lengths on bins of a quarter power of two). Never edit either by hand: run this again.

Needs ``tiktoken`` and ``llama-models`` (not project dependencies): ``pip install tiktoken``
then ``pip install --no-deps llama-models==0.3.0``. Each ``--repo NAME=GITDIR`` is a git
directory (bare is fine) of a public repository; HEAD is read.

The shipped measurement (commits in the JSON) read 17 repositories, chosen for a spread
of languages and for fitting the snapshots this project can fetch (under 500 MB with
history): spring-projects/spring-framework, numpy/numpy, sympy/sympy, pydantic/pydantic,
pallets/flask, psf/requests, fastapi/fastapi, prometheus/prometheus, etcd-io/etcd,
rust-lang/cargo, tokio-rs/tokio, git/git, redis/redis, facebook/folly, vuejs/core,
nodejs/undici, expressjs/express. Large, long-lived projects: their files run longer than
GitHub's at large (The Stack v3 publishes median files of 273 tokens for Java and 443 for C
and C++, in its own token count: HuggingFaceCode/stack-v3-train on the Hugging Face hub,
``stats/train/stats_by_language.json``; the median here is 788), so this is a corpus of
mature code, not of all public code.

Run: ``python benchmarks/code_lengths.py --repo git/git=/path/to/git.git --repo ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import subprocess
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MAX_FILE_BYTES = 1 << 20
"""Files of 1 MiB and more are left out (our choice, against machine-generated files: in
the shipped measurement the only two are numpy's f2c-translated LAPACK sources)."""

EXTENSIONS = {
    "c": "C", "h": "C",
    "cc": "C++", "cpp": "C++", "cxx": "C++", "hpp": "C++", "hh": "C++", "hxx": "C++",
    "ipp": "C++", "tcc": "C++",
    "py": "Python", "pyi": "Python", "pyx": "Python", "pxd": "Python",
    "java": "Java", "kt": "Kotlin", "kts": "Kotlin", "groovy": "Groovy", "scala": "Scala",
    "go": "Go", "rs": "Rust",
    "js": "JavaScript", "mjs": "JavaScript", "cjs": "JavaScript", "jsx": "JavaScript",
    "ts": "TypeScript", "tsx": "TypeScript", "mts": "TypeScript", "cts": "TypeScript",
    "vue": "Vue",
    "sh": "Shell", "bash": "Shell", "perl": "Perl", "pl": "Perl", "pm": "Perl", "tcl": "Tcl",
    "rb": "Ruby", "swift": "Swift", "m": "Objective-C", "mm": "Objective-C",
    "cs": "C#", "php": "PHP", "lua": "Lua", "f90": "Fortran", "f": "Fortran",
    "s": "Assembly", "asm": "Assembly", "cmake": "CMake",
}  # fmt: skip
"""Programming-language extensions (lower case) and the language each one counts as."""

GRID = (1.0, 5.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0,
        95.0, 97.5, 99.0, 99.5, 99.9)  # fmt: skip
"""Percentiles written to the TOML, besides 0, 100 and the shares under 4K/16K/64K."""
THRESHOLDS = (4096, 16384, 65536)


def git(gitdir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(gitdir), *args], input=stdin, capture_output=True, check=True
    ).stdout


def code_blobs(gitdir: Path) -> list[tuple[str, str, str, int]]:
    """(path, blob id, language, bytes) of HEAD's files with a code extension."""
    out = []
    for line in git(gitdir, "ls-tree", "-r", "-l", "-z", "HEAD").split(b"\0"):
        if not line:
            continue
        meta, path = line.decode().split("\t", 1)
        mode, kind, blob, size = meta.split()
        ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if kind == "blob" and mode != "120000" and ext in EXTENSIONS:
            out.append((path, blob, EXTENSIONS[ext], int(size)))
    return out


def read_blobs(gitdir: Path, blobs: list[str]) -> dict[str, bytes]:
    """Blob contents by id (``git cat-file --batch``); blobs a snapshot lacks are left out."""
    raw = git(gitdir, "cat-file", "--batch", stdin="".join(b + "\n" for b in blobs).encode())
    out, pos = {}, 0
    for blob in blobs:
        end = raw.index(b"\n", pos)
        header = raw[pos:end].split()
        pos = end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        out[blob] = raw[pos : pos + size]
        pos += size + 1
    return out


def percentile(sorted_lengths: np.ndarray, p: float) -> int:
    """Smallest length whose empirical CDF reaches p percent (the inverted CDF)."""
    n = len(sorted_lengths)
    if p <= 0:
        return int(sorted_lengths[0])
    return int(sorted_lengths[min(n, math.ceil(p / 100 * n)) - 1])


def percentile_points(lengths: np.ndarray) -> list[tuple[float, int]]:
    """[percentile, tokens] points: 0, the grid, the shares at the thresholds, 100."""
    s = np.sort(lengths)
    points = {0.0: int(s[0]), 100.0: int(s[-1])}
    for p in GRID:
        points[p] = percentile(s, p)
    for t in THRESHOLDS:
        share = round(100 * float(np.searchsorted(s, t, side="right")) / len(s), 4)
        if 0 < share < 100:
            points[share] = t  # a threshold's share replaces a grid point it rounds onto
    out = sorted(points.items())
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(out)), out
    return out


def histogram(lengths: np.ndarray) -> list[list[int]]:
    """[lower edge, count] on bins of a quarter power of two (edges rounded to tokens)."""
    edges = sorted({round(2 ** (k / 4)) for k in range(0, 4 * 24)})
    counts = np.histogram(lengths, bins=[*edges, 2**24])[0]
    return [[e, int(c)] for e, c in zip(edges, counts, strict=True) if c]


def measure(repos: list[tuple[str, Path]], tokenizer: Any) -> dict[str, Any]:
    lengths: list[int] = []
    per_repo, per_language = [], Counter()
    for name, gitdir in repos:
        files = code_blobs(gitdir)
        kept = [f for f in files if f[3] < MAX_FILE_BYTES]
        contents = read_blobs(gitdir, sorted({f[1] for f in kept}))
        repo_lengths, skipped = [], Counter()
        for _path, blob, language, _ in kept:
            data = contents.get(blob)
            if data is None:
                skipped["absent from the snapshot"] += 1
                continue
            if b"\0" in data:
                skipped["binary (NUL byte)"] += 1
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                skipped["not UTF-8"] += 1
                continue
            if not text.strip():
                skipped["empty"] += 1
                continue
            count = len(tokenizer.encode(text, bos=False, eos=False))
            repo_lengths.append(count)
            per_language[language] += 1
        lengths += repo_lengths
        per_repo.append({
            "repository": name,
            "commit": git(gitdir, "rev-parse", "HEAD").decode().strip(),
            "commit_date": git(gitdir, "log", "-1", "--format=%cs", "HEAD").decode().strip(),
            "code_files": len(files),
            "over_size_limit": len(files) - len(kept),
            "skipped": dict(skipped),
            "documents": len(repo_lengths),
            "tokens": sum(repo_lengths),
        })  # fmt: skip
        print(f"{name}: {len(repo_lengths)} documents, {sum(repo_lengths)} tokens", flush=True)
    arr = np.array(lengths)
    return {
        "repositories": per_repo,
        "languages": dict(per_language.most_common()),
        "samples": len(arr),
        "tokens": int(arr.sum()),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "max": int(arr.max()),
        "shares_over": {
            str(t): {
                "documents_pct": 100 * float((arr > t).mean()),
                "tokens_pct": 100 * float(arr[arr > t].sum() / arr.sum()),
            }
            for t in THRESHOLDS
        },
        "percentiles": percentile_points(arr),
        "histogram": histogram(arr),
    }


def toml_text(stats: dict[str, Any], tokenizer_sha: str) -> str:
    repos = "\n".join(f'  "{r["repository"]}@{r["commit"]}",' for r in stats["repositories"])
    over4k = stats["shares_over"]["4096"]
    description = (
        f"source files of {len(stats['repositories'])} public repositories (code), long-tailed: "
        f"{over4k['documents_pct']:.1f}% of files over 4K tokens hold "
        f"{over4k['tokens_pct']:.0f}% of the tokens"
    )
    source = (
        f"measured by autopar (benchmarks/code_lengths.py): every source file of "
        f"{len(stats['repositories'])} public repositories at pinned commits "
        f"(repositories below), Llama 3 tokenizer"
    )
    rows = "\n".join(f"  [{p:g}, {t}]," for p, t in stats["percentiles"])
    return f"""# Written by benchmarks/code_lengths.py (provenance in
# benchmarks/data/code_lengths.json); never edit by hand: run the script again.
# A document is one source file (not a whole repository) at each repository's newest
# commit: files with a programming-language extension, under 1 MiB, UTF-8 text.
# Tokens: the Llama 3 tokenizer (llama-models {metadata.version("llama-models")} on PyPI,
# tokenizer.model sha256 {tokenizer_sha[:16]}...), no BOS/EOS.
name = "code-files"
kind = "percentiles"
description = "{description}"
source = "{source}"
# The repositories and the commits read (HEAD of each snapshot).
repositories = [
{repos}
]
samples = {stats["samples"]}
mean = {round(stats["mean"])}
std = {round(stats["std"])}
max = {stats["max"]}
# [percentile, tokens]: inverted-CDF percentiles of the sample; the points at 4,096, 16,384
# and 65,536 tokens are the sample's shares of files at or under those lengths.
percentiles = [
{rows}
]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", required=True, help="NAME=GITDIR")
    root = Path(__file__).resolve().parent.parent
    parser.add_argument(
        "--out-toml", default=root / "planner/scattering/data/code-files.toml", type=Path
    )
    parser.add_argument("--out-json", default=root / "benchmarks/data/code_lengths.json", type=Path)
    args = parser.parse_args()
    try:
        from llama_models.llama3 import tokenizer as llama3
    except ImportError:
        raise SystemExit(
            "needs tiktoken and llama-models: pip install tiktoken && "
            "pip install --no-deps llama-models==0.3.0"
        ) from None
    model_file = Path(llama3.__file__).parent / "tokenizer.model"
    tokenizer_sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    repos = [(spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in args.repo]
    stats = measure(repos, llama3.Tokenizer.get_instance())
    stats = {
        "script": "benchmarks/code_lengths.py",
        "document": "one source file at the repository's newest commit",
        "filter": {
            "extensions": EXTENSIONS,
            "max_file_bytes": MAX_FILE_BYTES,
            "text": "valid UTF-8, no NUL byte, not blank",
        },
        "tokenizer": {
            "name": "Llama 3 (tiktoken BPE, 128,256 tokens)",
            "package": f"llama-models {metadata.version('llama-models')} (PyPI)",
            "file": "llama_models/llama3/tokenizer.model",
            "sha256": tokenizer_sha,
            "tiktoken": metadata.version("tiktoken"),
            "bos_eos": False,
        },
        **stats,
    }
    args.out_json.write_text(json.dumps(stats, indent=1) + "\n")
    args.out_toml.write_text(toml_text(stats, tokenizer_sha))
    for p, t in stats["percentiles"]:
        print(f"p{p:g}: {t}")


if __name__ == "__main__":
    main()
