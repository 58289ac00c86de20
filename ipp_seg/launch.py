"""The ``ipp-seg`` command's entry point, kept light: it takes Ctrl-C, SIGTERM and SIGHUP over
before the command line's modules load (typer, rich and ipp-seg's own take about 0.2 s, in which
a Ctrl-C had ended the process with a Python traceback)."""

from __future__ import annotations

import os
import signal
from contextlib import suppress


def stop_signals() -> list:
    """The signals that stop a command: Ctrl-C, a scheduler's SIGTERM, a hang-up where there is one."""
    return [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


def stop_as_on_ctrl_c_while_starting() -> None:
    """Ctrl-C, SIGTERM and SIGHUP end the process with 130, as an interrupted run does, until a command
    takes them over (``ipp_seg.cli``; Ctrl-C, for a command that does not, goes back to Python's
    KeyboardInterrupt once the options are read): in its first second (loading, reading options,
    loading the model) they had ended it with the system's 143 or 129, which a scheduler's wrapper
    did not take for the documented 130. Ended at once (:func:`stopped`), not by an exception: one
    raised inside onnxruntime's import had become an ImportError, a traceback and exit 1 or 2."""
    for signum in stop_signals():
        if signal.getsignal(signum) is not signal.SIG_IGN:  # (nohup's)
            with suppress(ValueError, OSError):  # (not the main thread: left as they are)
                signal.signal(signum, stopped)


def stopped(signum, frame) -> None:
    """A stop that came where no command handles it yet (loading, reading options, loading the
    model): said in a line, and the process ends with 130 as the system would have ended it, its
    outputs as a kill leaves them (each file is written whole or not at all)."""
    with suppress(OSError):
        os.write(2, f"ipp-seg: stopped ({signal.Signals(signum).name})\n".encode())
    os._exit(130)


def main() -> None:
    """``ipp-seg``: stops taken over, then the command line loaded and run."""
    stop_as_on_ctrl_c_while_starting()
    from .cli import main as run_command_line

    run_command_line()
