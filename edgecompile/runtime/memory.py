"""This process's memory, as the OS counts it (standard library only: it runs on devices)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss() -> int:
    """Bytes: the largest resident set this process has had (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def current_rss() -> int | None:
    """Bytes resident now (``VmRSS``), or None where /proc is not there."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024
