"""Keep TVM's own chatter out of the user's terminal.

TVM's importers ``print`` and its C++ core writes warnings straight to file descriptor 2 (e.g.
"Error converting operator …" before an exception we report properly, or gather's "fast mode"
warning, which the runtime's index-range check and the clamped gathers of
:mod:`edgecompile.passes.bounded_gather` make moot). While :func:`captured` is active,
Python-level stdout goes to a buffer and descriptors 1 and 2 to a temporary file; the text is then
logged at DEBUG level (``EDGECOMPILE_DEBUG=1`` shows it). Python code that writes to
``sys.stderr`` (progress displays) still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile


@contextlib.contextmanager
def captured(logger: logging.Logger):
    """Capture TVM's prints and native stdout/stderr for the duration of the block."""
    if os.environ.get("EDGECOMPILE_DEBUG"):
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as tmp, contextlib.redirect_stdout(io.StringIO()) as py_out:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        old_stderr = sys.stderr
        try:
            if _fileno(old_stderr) == 2:  # keep Python-level stderr (progress) on the terminal
                sys.stderr = os.fdopen(os.dup(saved[2]), "w", buffering=1)
            for fd in (1, 2):
                os.dup2(tmp.fileno(), fd)
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if sys.stderr is not old_stderr:
                sys.stderr.close()
                sys.stderr = old_stderr
            tmp.seek(0)
            text = tmp.read().decode(errors="replace") + py_out.getvalue()
            for line in text.splitlines():
                if line.strip():
                    logger.debug("tvm: %s", line)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except Exception:
        return None
