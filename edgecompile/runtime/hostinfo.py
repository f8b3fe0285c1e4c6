"""Facts about the machine this process runs on (standard library only; shared by all stages)."""

from __future__ import annotations

import os
import platform
import struct
import sys
from pathlib import Path

_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "arm", "armv7": "arm"}

# The auxiliary vector's hardware-capability entries (linux/auxvec.h).
AT_NULL, AT_HWCAP, AT_HWCAP2 = 0, 16, 26

# Bit n of AT_HWCAP / AT_HWCAP2 -> the feature's name as the kernel prints it in /proc/cpuinfo (and as
# profiles name it in cpu_features): Linux arch/arm64/include/uapi/asm/hwcap.h and the names in
# arch/arm64/kernel/cpuinfo.c; arch/arm/include/uapi/asm/hwcap.h for 32-bit ARM.
_HWCAP_NAMES: dict[str, tuple[list[str], list[str]]] = {
    "aarch64": (
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
        "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg".split(),
        "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
        "svebf16 i8mm bf16 dgh rng bti mte".split(),
    ),
    "arm": (
        "swp half thumb 26bit fastmult fpa vfp edsp java iwmmxt crunch thumbee neon vfpv3 vfpv3d16 tls "
        "vfpv4 idiva idivt vfpd32 lpae evtstrm fphp asimdhp asimddp asimdfhm asimdbf16 i8mm".split(),
        "aes pmull sha1 sha2 crc32 sb ssbs".split(),
    ),
}


def host_arch() -> str:
    """This machine's CPU architecture in the names profiles use (x86_64, aarch64, arm)."""
    m = platform.machine().lower()
    return _ARCH_ALIASES.get(m, m)


def cpu_flags() -> set[str]:
    """The CPU feature flags, in the names of /proc/cpuinfo (empty where they cannot be read).

    On ARM they come from the hardware capabilities the kernel hands the process in its auxiliary
    vector: they are what the process may use, and user-mode emulators (qemu-aarch64) set them for
    the CPU they emulate, while /proc/cpuinfo there describes the host's CPU. Elsewhere, or where
    the auxiliary vector cannot be read, /proc/cpuinfo's ``flags`` (x86) or ``Features`` (ARM) line.
    """
    arch = host_arch()
    if arch in _HWCAP_NAMES:
        flags = auxv_flags(arch)
        if flags:
            return flags
    return _cpuinfo_flags()


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def auxv_flags(arch: str, auxv: bytes | None = None) -> set[str]:
    """The feature names set in AT_HWCAP and AT_HWCAP2 of an auxiliary vector (``auxv``, default this
    process's ``/proc/self/auxv``) for ``arch`` (``aarch64`` or ``arm``); empty when unknown."""
    names = _HWCAP_NAMES.get(arch)
    if names is None:
        return set()
    if auxv is None:
        auxv = _read_auxv()
    entries = parse_auxv(auxv, word=8 if arch == "aarch64" else 4)
    flags = set()
    for key, table in zip((AT_HWCAP, AT_HWCAP2), names):
        bits = entries.get(key, 0)
        flags |= {name for i, name in enumerate(table) if bits >> i & 1}
    return flags


def _read_auxv() -> bytes:
    try:
        return Path("/proc/self/auxv").read_bytes()
    except OSError:
        return b""


def parse_auxv(data: bytes, word: int = 8, byteorder: str = sys.byteorder) -> dict[int, int]:
    """An auxiliary vector (``(type, value)`` pairs of unsigned words in the machine's byte order,
    ended by AT_NULL) as a dict; ``word`` is 8 on 64-bit processes, 4 on 32-bit ones."""
    code = {4: "I", 8: "Q"}[word]
    fmt = ("<" if byteorder == "little" else ">") + code + code
    entries: dict[int, int] = {}
    for key, value in struct.iter_unpack(fmt, data[: len(data) - len(data) % (2 * word)]):
        if key == AT_NULL:
            break
        entries.setdefault(key, value)
    return entries


def cpu_name() -> str:
    """The CPU's model name and vector extensions of note (benchmark headers name the CPU)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    notable = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "asimddp", "i8mm") if f in flags]
    return f"{name} ({', '.join(notable) or 'no wide SIMD flags'}, {len(os.sched_getaffinity(0))} CPUs)"
