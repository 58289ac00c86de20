"""What machine and software a result was made on: onnxruntime's last bits, and bf16 arithmetic,
differ between CPU families and library versions, so records of runs and models name them."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``'s model name on Linux, where ``platform.processor()``
    is empty; else that): bf16 arithmetic, and onnxruntime's last bits, differ between CPU families."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def software_versions(*packages: str) -> dict[str, str | None]:
    """Python's version and each installed package's (None where it is not installed), read from
    the installed metadata, without importing the packages."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def machine_description() -> dict[str, str]:
    """The system (``platform.platform()``) and the processor (:func:`cpu_model`)."""
    return {"system": platform.platform(), "processor": cpu_model()}
