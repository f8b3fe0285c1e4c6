"""Errors a user can act on.

Every failure that comes from the user's input (a model, a target name, an input array, an
artifact) is raised as a subclass of :class:`EdgeCompileError` whose message says what is wrong and
what to do. The CLI prints the message as one line and exits non-zero; anything else is a bug.
This module imports nothing, so both the compiler side and the runtime can use it.
"""

from __future__ import annotations


class EdgeCompileError(Exception):
    """Base class of all user-facing errors."""

    exit_code = 2


class ModelLoadError(EdgeCompileError):
    """The model file is missing, unreadable, not ONNX, or its external data is missing."""


class UnsupportedOpError(EdgeCompileError):
    """The model uses operators the frontend cannot import."""

    def __init__(self, nodes: list[tuple[str, str]], opset: int | None = None):
        self.nodes = nodes
        shown = ", ".join(f"node '{name}' (op {op})" for name, op in nodes[:5])
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        at = f" at opset {opset}" if opset is not None else ""
        super().__init__(
            f"unsupported operator{'s' if len(nodes) > 1 else ''}{at}: {shown}{more}; "
            "run `edgecompile inspect MODEL` for the full op coverage, or re-export the model "
            "without these ops"
        )


class InputSpecError(EdgeCompileError):
    """An input shape or dtype is missing, symbolic, or malformed at compile time."""


class TargetError(EdgeCompileError):
    """Unknown target name or malformed target profile."""


class RecipeError(EdgeCompileError):
    """Unknown recipe preset or malformed recipe option."""


class BuildError(EdgeCompileError):
    """TVM could not lower or link the model for the target."""


class ArtifactError(EdgeCompileError):
    """The artifact is missing files, was modified after compile, or cannot run on this machine."""


class InputMismatchError(EdgeCompileError):
    """Inputs given at run time do not match the artifact's names, shapes or dtypes."""


class CalibrationError(EdgeCompileError):
    """Calibration data is missing, malformed, or does not match the model's inputs."""


class SignatureError(ArtifactError):
    """The artifact's signature is missing where one is required, malformed, or does not verify."""


class EdgeCompileWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. degenerate calibration data).

    Library code raises it with :func:`warnings.warn`; the CLI prints each as one ``warning: …`` line."""
