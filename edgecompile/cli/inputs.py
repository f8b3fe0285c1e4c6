"""Reading the ``--input`` files of ``run`` and ``bench``."""

from __future__ import annotations

from pathlib import Path

from edgecompile.errors import InputMismatchError


def load_inputs(items: list[str] | None) -> dict:
    """The ``--input`` arrays of ``run`` and ``bench``: ``NAME=file.npy`` each, or ``.npz`` files of
    named arrays; a missing, unreadable or twice-given input is an :class:`InputMismatchError`."""
    import numpy as np

    feeds: dict = {}
    for item in items or []:
        name, sep, file = item.partition("=")
        if sep and name in feeds:
            raise InputMismatchError(f"input '{name}' is given twice (--input {item})")
        path = Path(file if sep else name)
        if not path.is_file():
            raise InputMismatchError(f"input file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:
            raise InputMismatchError(f"cannot read {path} as a .npy or .npz array file: {e}") from e
        if isinstance(data, np.ndarray):
            if not sep:
                raise InputMismatchError(f"give the input name for a .npy file: --input NAME={path}")
            feeds[name] = data
        else:
            if sep:
                raise InputMismatchError(f"--input {item}: an .npz holds named arrays; pass it as --input {path}")
            twice = sorted(set(feeds) & set(data.files))
            if twice:
                raise InputMismatchError(f"input '{twice[0]}' is given twice (again in {path})")
            feeds.update({k: data[k] for k in data.files})
    return feeds
