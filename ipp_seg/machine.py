"""What machine and software a result was made on: onnxruntime's last bits, and bf16 arithmetic,
differ between CPU families and library versions, so records of runs and models name them."""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path


@functools.cache
def code_digest() -> str:
    """The sha256 (hex) of ipp-seg's own code: each ``.py`` file of the package, by its path within
    it and its bytes (CRLF read as LF, as a Windows checkout may write them), in path order. The
    version names a release; a clone between two releases, or one with changes of its own, names
    the release before it (a coordinator's pass: two builds that read a 16-bit frame 0.4° apart
    both wrote 0.2.19, and a resume mixed their rows without a word)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py"), key=lambda found: found.relative_to(package).as_posix()):
        name = path.relative_to(package).as_posix()
        try:
            digest.update(name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
        except OSError:
            digest.update(name.encode() + b"\0unreadable\0")
    return digest.hexdigest()


def software_version() -> str:
    """ipp-seg's version with its code's digest (:func:`code_digest`) as a local label,
    ``0.2.20+1a2b3c4d5e6f``, as rows, reports, run records, SEGs, SRs and masks name it."""
    from . import __version__

    return f"{__version__}+{code_digest()[:12]}"


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


#: The distributions onnxruntime comes as: the CPU one, and those of GPUs and other accelerators.
_ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def onnxruntime_version() -> str | None:
    """The version of the onnxruntime that runs the models (the module's own, once imported; else
    the installed distribution's, whichever of CPU, GPU or other it is); None without one."""
    module = sys.modules.get("onnxruntime")
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    for distribution in _ONNXRUNTIME_DISTRIBUTIONS:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_description() -> dict[str, str]:
    """The system (``platform.platform()``) and the processor (:func:`cpu_model`)."""
    return {"system": platform.platform(), "processor": cpu_model()}


def runtime_description() -> dict[str, str | None]:
    """Python's and onnxruntime's versions, the system and the processor, as a JSON report names
    them (a batch run's record names them for the run): the last digits of an AoP depend on
    them, and a report of ``predict`` had named none (a QA auditor's pass); torch's version too
    where torch is loaded (``--backend torch``, as a batch run's record names it). A new dict each
    time, read once a process."""
    torch = sys.modules.get("torch")
    return dict(_runtime()) | ({"torch": str(torch.__version__)} if getattr(torch, "__version__", None) else {})


@functools.cache
def _runtime() -> tuple[tuple[str, str | None], ...]:
    return tuple({**software_versions(), "onnxruntime": onnxruntime_version(), **machine_description()}.items())
