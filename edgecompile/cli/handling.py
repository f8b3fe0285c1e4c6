"""How every command ends: user errors as one ``error:`` line and exit 2, filesystem errors exit 2,
Ctrl-C exit 130, anything else ``internal error`` and exit 3; our warnings as ``warning:`` lines."""

from __future__ import annotations

import functools
import os
import signal
import threading
import warnings

import typer
from rich.markup import escape

from edgecompile.cli.views import err
from edgecompile.errors import EdgeCompileError, EdgeCompileWarning

_default_showwarning = warnings.showwarning
_interrupted: list[bool] = []


def _on_sigint(_signum, _frame) -> None:
    # TVM's FFI turns an exception raised inside a callback into RuntimeError("RuntimeError"):
    # remember the Ctrl-C so the wrapper below still exits 130, whatever reaches it.
    _interrupted.append(True)
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, EdgeCompileWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", markup=True, highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def handle_errors(fn):
    """User errors -> one ``error:`` line and their exit code (2); filesystem errors -> exit 2;
    Ctrl-C -> exit 130; anything else -> ``internal error`` and exit 3. Warnings of ours print as
    ``warning:`` lines."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _interrupted.clear()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _on_sigint)
        warnings.showwarning = _show_warning
        try:
            return fn(*args, **kwargs)
        except EdgeCompileError as e:  # (a wrapped Ctrl-C, e.g. inside a TVM build, is still Ctrl-C)
            _fail("interrupted", 130) if _interrupted else _fail(str(e), e.exit_code)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as e:  # a full disk, a read-only folder, a missing directory: the user's to fix
            if _interrupted or os.environ.get("EDGECOMPILE_DEBUG"):
                raise
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}", 2)
        except Exception as e:  # a bug: say so in one line, keep the traceback behind a flag
            if _interrupted:
                _fail("interrupted", 130)
            if os.environ.get("EDGECOMPILE_DEBUG"):
                raise
            err.print(
                f"internal error: {type(e).__name__}: {e} (this is a bug in edgecompile; set "
                "EDGECOMPILE_DEBUG=1 for the traceback)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(3) from None

    return wrapper


def _fail(message: str, code: int):
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None
