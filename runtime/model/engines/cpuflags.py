"""What this CPU's matrix units are, from the flags the kernel reports in /proc/cpuinfo.

The engine choice (:mod:`~frameqc.runtime.model.engines.choice`) reads them to know which
precisions can run here at all (bf16 needs bf16 units) and keys its measurements by them:
a measurement made on one kind of CPU says nothing about another.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

#: The flags that decide how fast (or whether) each precision runs: AMX tiles (Sapphire
#: Rapids and later), AVX-512 bf16 dot products (Cooper Lake, AMD Zen 4), VNNI int8 dot
#: products (AVX-512 or AVX).
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni",
                "avx512f", "avx2")


def cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The first CPU's feature flags (empty when /proc/cpuinfo cannot be read)."""
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_name(path: Path = CPUINFO) -> str:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def has_bf16(flags: frozenset[str]) -> bool:
    """bf16 arithmetic in hardware: AMX tiles or AVX-512 bf16 dot products."""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def units(flags: frozenset[str]) -> str:
    """The matrix units in a few words, for ``frameqc info`` and the benchmark."""
    have = [f for f in MATRIX_FLAGS if f in flags and f not in ("avx512f", "avx2", "amx_tile")]
    return ", ".join(have) if have else "no bf16, int8 dot-product or AMX units"


def signature(flags: frozenset[str], name: str) -> str:
    """This kind of CPU, for keying measurements: its name and matrix flags."""
    text = name + "|" + ",".join(sorted(f for f in MATRIX_FLAGS if f in flags))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
