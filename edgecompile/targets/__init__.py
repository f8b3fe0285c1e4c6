"""Target profiles: one TOML file per device under ``profiles/``, or a user's own file.

A profile names the TVM target (a dict), the host target for GPU code, the CPU architecture the
library runs on (``arch``, used to pick the linker and to refuse a wrong-machine load), the CPU
features the code needs at run time (checked by the runtime before loading), the cross compilers
to try (``cross_cc``), and an energy table in pJ per operation. The ``native`` profile is resolved
at compile time to the compiling machine's CPU as LLVM detects it. A ``runtime = "coreml"`` profile
is exported as a Core ML ML Program for its ``minimum_deployment_target`` instead of a TVM library.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgecompile.errors import TargetError
from edgecompile.runtime.hostinfo import cpu_flags, host_arch

PROFILE_DIR = Path(__file__).parent / "profiles"

# pJ per operation at 45 nm (Horowitz, "Computing's energy problem", ISSCC 2014). Only ratios
# between recipes are meaningful; a profile may override any entry in its [energy] table.
DEFAULT_ENERGY_PJ = {
    "fp32_mul": 3.7,
    "fp32_add": 0.9,
    "fp16_mul": 1.1,
    "fp16_add": 0.4,
    "int8_mul": 0.2,
    "int8_add": 0.03,
    "int32_mul": 3.1,
    "int32_add": 0.1,
    "mem_read_32b": 5.0,
}


@dataclass
class TargetProfile:
    """A device profile; see the module docstring for the fields."""

    name: str
    tvm: dict
    description: str = ""
    runtime: str = "tvm"
    arch: str = "host"
    device: str = "cpu"
    host: dict | None = None
    cpu_features: list[str] = field(default_factory=list)
    cross_cc: list[str] = field(default_factory=list)
    energy: dict = field(default_factory=lambda: dict(DEFAULT_ENERGY_PJ))
    minimum_deployment_target: str = ""  # runtime "coreml": a coremltools.target name (iOS17, macOS14)
    cuda_graphs: bool = False  # CUDA: launch the kernels as captured CUDA graphs (not yet measured on a GPU)
    source: str = ""

    @property
    def is_host_arch(self) -> bool:
        return self.arch in ("host", host_arch())

    def resolved(self) -> TargetProfile:
        """A copy with ``native``/``host`` placeholders replaced by this machine's values."""
        import copy

        p = copy.deepcopy(self)
        if p.arch == "host":
            p.arch = host_arch()
        if p.tvm.get("mcpu") == "native":
            from tvm.target import codegen

            p.tvm["mcpu"] = codegen.llvm_get_system_cpu()
            p.tvm.setdefault("mtriple", f"{host_arch()}-linux-gnu")
            p.cpu_features = sorted(set(p.cpu_features) | (cpu_flags() & _NATIVE_FLAGS))
        if p.tvm.get("kind") == "cuda" and p.tvm.get("arch") == "native":
            p.tvm["arch"] = local_cuda_arch()
        if p.host and p.host.get("kind") == "llvm":
            p.host.setdefault("mtriple", f"{p.arch}-linux-gnu")
        return p

    def find_linker(self) -> str | None:
        """The C compiler that links the library: the system one on the host, else a cross one."""
        if self.is_host_arch:
            return None  # TVM's default (the system cc)
        for cc in self.cross_cc:
            if cc.startswith("$"):
                cc = os.environ.get(cc[1:], "")
            if cc and shutil.which(cc):
                return cc
        return ""

    def to_json(self) -> dict:
        extra = {"minimum_deployment_target": self.minimum_deployment_target} if self.minimum_deployment_target else {}
        if self.device == "cuda":
            extra["cuda_graphs"] = self.cuda_graphs
        return {
            "name": self.name,
            "description": self.description,
            "runtime": self.runtime,
            "arch": self.arch,
            "device": self.device,
            "tvm": self.tvm,
            "host": self.host,
            "cpu_features": self.cpu_features,
            "cross_cc": self.cross_cc,
            "energy": self.energy,
            **extra,
        }


def local_cuda_arch() -> str:
    """``sm_XY`` of this machine's first NVIDIA GPU, from ``nvidia-smi`` (no driver binding needed)."""
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise TargetError(
            "target 'cuda' compiles for this machine's GPU, but nvidia-smi is not here (no NVIDIA driver); "
            "name the architecture instead: --target cuda-sm80 (A100) or cuda-sm90 (H100/H200)"
        )
    run = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    caps = [line.strip() for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 or not caps or not caps[0].replace(".", "").isdigit():
        raise TargetError(
            f"target 'cuda': nvidia-smi found no GPU ({(run.stderr or run.stdout).strip() or 'no output'}); "
            "name the architecture instead: --target cuda-sm80 or cuda-sm90"
        )
    return "sm_" + caps[0].replace(".", "")


_NATIVE_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "asimd", "asimddp"}


def _from_toml(path: Path) -> TargetProfile:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target profile {path}: {e}") from e
    for key in ("name", "tvm"):
        if key not in data:
            raise TargetError(f"target profile {path} lacks the required key '{key}'")
    if not isinstance(data["tvm"], dict) or "kind" not in data["tvm"]:
        raise TargetError(f"target profile {path}: [tvm] must be a table with a 'kind' (e.g. llvm)")
    known = set(TargetProfile.__dataclass_fields__) - {"source"}
    unknown = set(data) - known
    if unknown:
        raise TargetError(f"target profile {path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    energy = dict(DEFAULT_ENERGY_PJ)
    energy.update(data.pop("energy", {}))
    return TargetProfile(**data, energy=energy, source=str(path))


def list_profiles() -> list[TargetProfile]:
    """The bundled profiles, sorted by name."""
    return sorted((_from_toml(p) for p in PROFILE_DIR.glob("*.toml")), key=lambda p: p.name)


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def get_profile(name_or_path: str) -> TargetProfile:
    """A bundled profile by name, or a user's profile file by path."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise TargetError(f"target profile file not found: {path}")
        return _from_toml(path)
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        names = profile_names()
        near = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise TargetError(
            f"unknown target '{name_or_path}'{hint} (known: {', '.join(names)}; or pass a profile file path)"
        )
    return _from_toml(path)
