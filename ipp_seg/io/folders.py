"""Walking a folder tree the way ipp-seg's folder commands do (``batch``, ``evaluate``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


def walk_folders(root: Path,
                 skip: Callable[[Path, Path], bool] | None = None) -> Iterator[tuple[Path, Path, list[str]]]:
    """(folder, its real path, the names of its non-hidden entries that are not folders) for
    ``root`` and its non-hidden sub-folders, sub-folders in name order.

    Folder links are followed, each real folder once, so a link loop ends. A folder for which
    ``skip(folder, real_path)`` is true is left out with everything below it (it is asked once
    per real folder, never for a folder already walked)."""
    visited: set[Path] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        here, real = Path(folder), Path(os.path.realpath(folder))
        if real in visited or (skip is not None and skip(here, real)):
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield here, real, [name for name in names if not name.startswith(".")]
