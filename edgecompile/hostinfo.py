"""Facts about the machine this process runs on (standard library only; shared by all stages)."""

from __future__ import annotations

import platform
from pathlib import Path

_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "arm", "armv7": "arm"}


def host_arch() -> str:
    """This machine's CPU architecture in the names profiles use (x86_64, aarch64, arm)."""
    m = platform.machine().lower()
    return _ARCH_ALIASES.get(m, m)


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()
