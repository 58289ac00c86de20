"""The one base of the errors ipp-seg raises on purpose, for callers of the library.

Each of ipp-seg's own exceptions (a scan that cannot be read, a model that cannot be found or
run, a folder a batch run refuses, a training run that cannot go on ...) derives from
:class:`IppSegError` as well as from the built-in kind it has always been (``ValueError``,
``LookupError``, ``RuntimeError``), so ``except IppSegError`` catches them all and code that
catches the built-in kinds works as before. Arguments of the wrong type or value still raise
plain ``TypeError`` / ``ValueError``: those are mistakes in the calling code.
"""

from __future__ import annotations


class IppSegError(Exception):
    """Base of ipp-seg's own exceptions; the message says what went wrong and how to go on."""


#: What a frame's row, or the command line, says of a process out of memory (the machine's limit, not the file's).
OUT_OF_MEMORY_SAID = ("out of memory: give ipp-seg more (a ulimit -v or a container's limit; about 1 GB of address "
                      "space for predict, 1.6 GB for batch with one worker) or fewer --workers")


__all__ = ["IppSegError", "OUT_OF_MEMORY_SAID"]
