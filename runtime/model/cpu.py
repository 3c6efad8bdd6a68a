"""How many CPUs this process may use, and so how many threads a session gets."""

from __future__ import annotations

import os
from pathlib import Path

from frameqc.runtime.errors import UsageError

THREADS_ENV = "FRAMEQC_THREADS"


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs a container's cgroup allows (rounded down, at least 1), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        if quota == "max":
            return None
        return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else max(1, quota // period)


def resolve_threads(threads: int | None) -> int:
    """``--threads``, else ``$FRAMEQC_THREADS``, else the CPUs this process may use."""
    if threads is None and os.environ.get(THREADS_ENV):
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise UsageError(f"${THREADS_ENV} must be a whole number") from None
    if threads is not None and threads < 1:
        raise UsageError("threads must be at least 1")
    return threads or available_cpus()
