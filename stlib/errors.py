"""Errors a user can fix (a bad name, key or value, a missing dataset, a checkpoint that does not
fit) end in one clear line, in notebooks and on the command line, not under a long traceback.

:data:`USER_ERRORS` lists them. On the command line ``python -m stlib.train`` prints
``error: <message>`` (``--debug`` shows the traceback); in an IPython kernel (JupyterLab,
papermill) ``import stlib`` installs :func:`show_in_one_line` for them, so the cell's output is
``DatasetNotFoundError: <message>``; ``%tb`` or ``STLIB_DEBUG=1`` shows the whole traceback.
A cell that raises one still fails (papermill stops there).
"""
from __future__ import annotations

import os

from .config import ConfigError
from .data import DatasetNotFoundError
from .models import CheckpointError
from .record import ResumeError
from .registry import UnknownNameError

#: What a user fixes by changing a setting, a path or a file (the message says how).
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, UnknownNameError,
                                                DatasetNotFoundError, CheckpointError, ResumeError)


def one_line(err: BaseException) -> str:
    """``<ErrorType>: <message>`` on one line (a message's own line breaks become spaces)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def debugging() -> bool:
    return os.environ.get("STLIB_DEBUG", "").lower() not in ("", "0", "false", "no")


def show_in_one_line() -> bool:
    """In an IPython kernel, show :data:`USER_ERRORS` as one line (plus a hint for the full
    traceback); elsewhere, or with ``STLIB_DEBUG=1``, change nothing. Returns whether it did."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or debugging():
        return False

    def handler(shell, etype, value, tb, tb_offset=None):
        lines = [one_line(value), "(the full traceback: %tb in the next cell, or STLIB_DEBUG=1)"]
        shell._showtraceback(etype, value, lines)  # an error output: the cell still fails
        return lines

    shell.set_custom_exc(USER_ERRORS, handler)
    return True
