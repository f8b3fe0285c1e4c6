"""Tensor specs: the name, static shape and dtype of a model input or output."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from edgecompile.errors import InputSpecError


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor with a static shape."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    # Inclusive bounds for integer inputs that index a table (token ids into an embedding):
    # TVM's gather does not bound-check, so the runtime refuses values outside this range.
    valid_range: tuple[int, int] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        if self.valid_range is None:
            del d["valid_range"]
        else:
            d["valid_range"] = list(self.valid_range)
        return d

    def describe(self) -> str:
        return f"{self.name}[{'x'.join(map(str, self.shape)) or 'scalar'} {self.dtype}]"


_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x128`` (or ``1,128``) into ``(1, 128)``."""
    t = text.strip().replace(",", "x").replace("X", "x")
    if t in ("", "scalar"):
        return ()
    if not _SHAPE_RE.match(t):
        raise InputSpecError(f"malformed shape '{text}': write dimensions as 1x128")
    return tuple(int(d) for d in t.split("x"))


_RANGED_RE = re.compile(r"^\d+(\.\.\d+)?(x\d+(\.\.\d+)?)*$")
Dim = int | tuple[int, int]  # a fixed size, or an inclusive (lo, hi) range


def parse_shape_spec(text: str) -> tuple[Dim, ...]:
    """Parse ``1x128`` into ``(1, 128)`` and ``1..8x1..128`` into ``((1, 8), (1, 128))``: a range
    ``LO..HI`` (inclusive, ``1 <= LO <= HI``) for a dimension the artifact accepts at any size in it."""
    t = text.strip().replace(",", "x").replace("X", "x")
    if ".." not in t:
        return parse_shape(text)
    if not _RANGED_RE.match(t):
        raise InputSpecError(f"malformed shape '{text}': write dimensions as 1x128, ranges as 1x1..128")
    dims: list[Dim] = []
    for part in t.split("x"):
        if ".." not in part:
            dims.append(int(part))
            continue
        lo, hi = (int(v) for v in part.split(".."))
        if not 1 <= lo <= hi:
            raise InputSpecError(f"malformed range '{part}' in '{text}': write LO..HI with 1 <= LO <= HI")
        dims.append(lo if lo == hi else (lo, hi))
    return tuple(dims)


def parse_sizes(text: str) -> list[int]:
    """``16,64,256`` (``--buckets GROUP=...``, ``report --lengths``) -> ``[16, 64, 256]``."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputSpecError(f"malformed sizes '{text}': write whole numbers, 16,64,256") from None


def is_ranged(shape) -> bool:
    """Whether a parsed shape has a ``(lo, hi)`` range."""
    return any(isinstance(d, tuple) for d in shape)


def format_shape(shape) -> str:
    """``(1, (1, 128))`` as ``1x1..128``."""
    return "x".join(f"{d[0]}..{d[1]}" if isinstance(d, tuple) else str(d) for d in shape) or "scalar"


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """Parse ``["ids=1x128", "mask=1x128"]`` into ``{"ids": "1x128", ...}``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputSpecError(f"malformed {what} '{item}': write NAME=VALUE, e.g. ids=1x128")
        if name.strip() in out:
            raise InputSpecError(f"{what} gives '{name.strip()}' twice ({item})")
        out[name.strip()] = value.strip()
    return out
