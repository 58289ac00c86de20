"""Shipped models: where they live, their cards, and resolving ``--model NAME|PATH``.

A shipped model is ``models/<name>.onnx`` (served by onnxruntime), ``models/<name>.pt`` (the
PyTorch weights), and its card ``models/<name>.json``. The models folder is the repository's
``models/`` (the package is installed editable from a clone) or ``$IPP_SEG_MODELS``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
import unicodedata
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import IppSegError
from ..io.folders import begins_as_formula, composed_name, read_json_file
from ..io.formats import name_without_suffix
from ..printable import CONTROL_CHARACTER, terminal_text

DEFAULT_MODEL = "dssau-net-s"
log = logging.getLogger(__name__)


class ModelNotFoundError(IppSegError, LookupError):
    pass


def shipped_models_dir() -> Path:
    """The clone's models/ folder, where the shipped models lie (an editable install reads them there)."""
    return Path(__file__).resolve().parents[2] / "models"


def models_dir() -> Path:
    env = os.environ.get("IPP_SEG_MODELS")
    return Path(env) if env else shipped_models_dir()


def describe_models_dir(folder: Path) -> str:
    """The models folder as a user set it: named by $IPP_SEG_MODELS when that chose it, quoted
    where spaces begin or end it (a setting of blanks alone had read as no name at all)."""
    name = str(folder)
    shown = repr(name) if name != name.strip() else name
    return f"{shown} ($IPP_SEG_MODELS)" if os.environ.get("IPP_SEG_MODELS") else shown


def unusable_models_dir(folder: Path) -> str | None:
    """What to say, and to do, when the models folder does not exist or cannot be read; None
    when it can be used."""
    try:
        is_dir = stat.S_ISDIR(os.stat(folder).st_mode)
    except PermissionError:  # a folder above it without search permission: whether it is there is not known
        is_dir = None
    except OSError:
        is_dir = False
    if is_dir and os.access(folder, os.R_OK | os.X_OK):
        return None
    if is_dir is None or is_dir:
        # (An install made under umask 077, a folder at mode 700: it had read as no models at all, or ended in a
        # traceback, or blamed the output folder.)
        where = "" if is_dir else ", a folder above it"
        return (f"the models folder {describe_models_dir(folder)} cannot be read ({os.strerror(errno.EACCES)}"
                f"{where}): whoever installed ipp-seg can let its users read it (chmod -R a+rX on the folder, and "
                "a+x on the folders above it)")
    if os.environ.get("IPP_SEG_MODELS"):
        if folder.exists():  # a model file named where its folder belongs
            return f"the models folder {describe_models_dir(folder)} is not a folder: name the folder of the models"
        return f"the models folder {describe_models_dir(folder)} does not exist"
    # A non-editable install: the package was copied into site-packages without the clone's models/.
    return (f"the models folder {folder} does not exist: the shipped models are read from the models/ folder of "
            "the clone ipp-seg was installed from, so install it with pip install -e . from a clone, or set "
            "IPP_SEG_MODELS to a folder of models")


@dataclass(frozen=True)
class ModelSpec:
    """A model file to load and, for shipped models, its card (a dict) and the card's path."""

    name: str
    onnx_path: Path | None
    torch_path: Path | None
    card: dict | None
    card_path: Path | None = None
    given_as_file: bool = False  # named by its file's path (--model x.onnx), not by a listed model's name

    @property
    def validation(self) -> dict:
        """The card's validation figures over all blocks (``dice_ps``, ``dice_fh``,
        ``median_abs_delta_aop_deg``, ``score``, ...); empty for a model without a card."""
        return ((self.card or {}).get("validation") or {}).get("overall") or {}

    @property
    def validated_by(self) -> str | None:
        """For a model trained on every frame (it has no validation of its own): the run whose
        figures its card gives, the same recipe with the validation blocks held out; else None."""
        source = (self.card or {}).get("validation_source")
        return _model_file_name(Path(source["checkpoint"])) if source else None

    @property
    def trained_case_ids(self) -> tuple[tuple[str, str], ...]:
        """The case IDs of the frames the model's last training run trained on, as (first, last)
        blocks (:func:`case_id_blocks`); empty where its card lists none (cards before 0.2.4, a
        model without a card)."""
        blocks = ((self.card or {}).get("training") or {}).get("train_case_ids")
        if not isinstance(blocks, list):
            return ()
        return tuple((str(b[0]), str(b[1])) for b in blocks if isinstance(b, list) and len(b) == 2)

    @property
    def earlier_trained_case_ids(self) -> tuple[tuple[str, str], ...]:
        """The case IDs the runs its weights started from trained on (its card's lineage, where
        each run recorded them), as blocks: a fine-tuned model's validation on those is a fit."""
        return lineage_train_blocks(((self.card or {}).get("training") or {}).get("lineage"))

    def trained_on(self, case_id: str) -> bool:
        """Whether ``case_id`` is among :attr:`trained_case_ids` or :attr:`earlier_trained_case_ids`."""
        return in_blocks(case_id, self.trained_case_ids + self.earlier_trained_case_ids)

    def card_sha256(self, kind: str) -> str | None:
        """The sha256 the card lists for its ``kind`` ("onnx"/"torch") file, in lower case as
        ``sha256sum`` writes it; None without one."""
        listed = ((self.card or {}).get("files", {}).get(kind) or {}).get("sha256")
        return listed.lower() if isinstance(listed, str) else None

    def card_file_sha256(self) -> str | None:
        """The sha256 of the model card's own file, as it is now (a run's record and ``models
        --json`` name it: a card's figures and confidence floors are no part of the weights'
        checksum, and an edited card had been told from the shipped one by nothing, a QA
        auditor's pass); None without a card, or where it cannot be read."""
        try:
            return sha256_of(self.card_path) if self.card_path is not None else None
        except OSError:
            return None

    @property
    def missing_files(self) -> tuple[Path, ...]:
        """The model's files that its card names and that are not there."""
        return tuple(p for p in (self.onnx_path, self.torch_path) if p is not None and not p.is_file())

    @property
    def unreadable_files(self) -> tuple[Path, ...]:
        """The model's files that are there but that its user may not read (installed under umask 077)."""
        return tuple(p for p in (self.onnx_path, self.torch_path)
                     if p is not None and p.is_file() and not os.access(p, os.R_OK))

    @property
    def mismatched_files(self) -> tuple[Path, ...]:
        """The model's files that are there but are not the files its card describes (their
        sha256 differs): the card's figures are not theirs, and loading them is refused. A file
        that cannot be read is not among them (:attr:`unreadable_files`)."""
        closed = self.unreadable_files
        return tuple(p for kind, p in (("onnx", self.onnx_path), ("torch", self.torch_path))
                     if p is not None and p.is_file() and p not in closed and self.card_sha256(kind)
                     and sha256_of(p) != self.card_sha256(kind))


def model_summary(spec: ModelSpec) -> dict:
    """What ``ipp-seg models --json`` says of a listed model: its name, config, card, each file
    (path, the sha256 its card lists, whether it is there and whether its bytes are those), the
    card's validation over all blocks (none where a file is not the card's) and, for a model
    trained on every frame, the run whose figures those are; the training frames' ID blocks."""
    from .backends import confidence_floors_used

    mismatched, closed = spec.mismatched_files, spec.unreadable_files
    files = {kind: {"path": str(path), "sha256": spec.card_sha256(kind), "present": path.is_file(),
                    "readable": path.is_file() and path not in closed,
                    "matches_card": (path.is_file() and path not in mismatched
                                     if spec.card_sha256(kind) and path not in closed else None)}
             for kind, path in (("onnx", spec.onnx_path), ("torch", spec.torch_path)) if path is not None}
    return {"name": spec.name, "default": spec.name == DEFAULT_MODEL, "config": (spec.card or {}).get("config"),
            "card": None if spec.card_path is None else str(spec.card_path), "card_sha256": spec.card_file_sha256(),
            # (What its rows' low_confidence and ps_low_confidence compare with: the card's, else the defaults.)
            "confidence_floors": confidence_floors_used(spec),
            "files": files,
            "validation": {} if mismatched else spec.validation, "validated_by": spec.validated_by,
            "trained_case_ids": [list(block) for block in spec.trained_case_ids + spec.earlier_trained_case_ids]}


def _model_file_name(path: Path) -> str:
    """A model file's name: its stem, with its run folder for a run's best.pt / last.pt (every
    run has one)."""
    return f"{path.parent.name}/{path.stem}" if path.stem in ("best", "last") and path.parent.name else path.stem


def _card_of_file(path: Path) -> dict | None:
    """The model card of its name beside a model file run by its path (``NAME.json`` beside
    ``NAME.onnx``), where it describes that file (its sha256): the file then runs with its card's
    confidence floors and training frames, as by the model's name (a QA pass: the same file had
    been warned with other floors by path than by name). None without one, or where it is no
    model card ipp-seg can use. Refused (ModelNotFoundError) where it describes another file, as
    loading by name refuses it: its rows would carry the card's model name while the card's
    figures and floors are not its own. (It had run with a warning, which ``-q`` held back: a QA
    auditor's pass found a SEG, an SR and a JSON naming a model whose weights had been changed,
    by the name of the genuine one.)"""
    card_path, card = path.with_suffix(".json"), _card_beside(path)
    try:
        listed = card["files"]["onnx" if path.suffix == ".onnx" else "torch"]["sha256"]
    except (KeyError, TypeError):  # no card of ipp-seg's, or none for this kind of file
        return None
    try:
        digest = sha256_of(path) if isinstance(listed, str) else listed
    except OSError:  # unreadable: loading it says so
        return None
    if digest == (listed.lower() if isinstance(listed, str) else listed):  # (as sha256sum writes it, or in capitals)
        return _checked_card(card)[0]  # (the card as read: not read a second time)
    raise ModelNotFoundError(f"model file {path} is not the file its model card {card_path.name} describes (sha256 "
                             f"{digest[:12]}, the card's {listed[:12]}), and its rows would be named as the card's "
                             "model: if it was damaged in a copy, copy it again; to run other weights, give them "
                             "a name of their own (copy the file to another name), or move the card away")


def _refuse_if_named_as_another_model(path: Path) -> None:
    """Refuse (ModelNotFoundError) a model file run by its path whose name is a listed model's
    (``fake/dssau-net-s.onnx``) while its weights are not that model's (another sha256): its rows'
    model column, a SEG's and an SR's algorithm name would name the listed model, and only a
    sha256 tell them apart. So also beside a card of its own (a file that is no card, or a card
    written for those weights under the listed model's name, had let it pass)."""
    try:  # (by the name a reader takes it for: dssau\u2011net-s, a non-breaking hyphen, reads as dssau-net-s)
        listed = next((spec for spec in shipped_models() if look_alike(spec.name) == look_alike(path.stem)), None)
    except OSError:  # no models folder to compare with
        return
    # (The listed file's sha256 as its card gives it: loading it by name checks the file against it.)
    theirs = None if listed is None else listed.card_sha256("onnx" if path.suffix == ".onnx" else "torch")
    if not theirs:
        return
    try:
        digest = sha256_of(path)
    except OSError:  # unreadable: loading it says so
        return
    if digest != theirs:
        raise ModelNotFoundError(f"model file {path} is named as the model {listed.name} but holds other weights "
                                 f"(sha256 {digest[:12]}, {listed.name}'s {theirs[:12]}): its rows, SEGs and SRs would "
                                 f"name it {listed.name}; copy it to a name of its own and give that to --model")


def case_id_blocks(ids: Iterable[str]) -> list[tuple[str, str]]:
    """Case IDs as blocks (first, last): a run of consecutive numbers written with one width, after
    one prefix (``("04402", "04601")``: 200 PSFHS frames; ``("case001", "case060")``) as one
    block, any other ID as a block of itself (``("scan_a", "scan_a")``). Sorted; what a model
    card lists of the frames a model trained on. (Named IDs had been a block each: an exported
    model's metadata listed case001 ... case060 one by one, a research fellow's pass.)"""
    numbered = sorted((*parts, i) for i in set(ids) if (parts := _prefix_and_number(i)) is not None)
    blocks: list[list] = []
    for prefix, width, number, case_id in numbered:
        if blocks and blocks[-1][2:] == [prefix, width, number - 1]:
            blocks[-1][1], blocks[-1][4] = case_id, number
        else:
            blocks.append([case_id, case_id, prefix, width, number])
    others = sorted(i for i in set(ids) if _prefix_and_number(i) is None)
    return [(block[0], block[1]) for block in blocks] + [(i, i) for i in others]


_PREFIXED_NUMBER = re.compile(r"(.*?)([0-9]+)")


def _prefix_and_number(case_id: str) -> tuple[str, int, int] | None:
    """(prefix, width of its number, the number) of an ID that ends in ASCII digits (``case001``:
    ("case", 3, 1); ``04402``: ("", 5, 4402)), None for another."""
    found = _PREFIXED_NUMBER.fullmatch(case_id)
    return None if found is None else (found.group(1), len(found.group(2)), int(found.group(2)))


def check_export_target(path: str | os.PathLike[str]) -> None:
    """Raise ValueError for a file ``ipp-seg export`` should not write: one that ``--model``
    would not take as an ONNX model (another suffix: ``x.pt`` was written, and then read as
    PyTorch weights; a name a spreadsheet would read as a formula), or the ONNX file of a model
    of the models folder (written over, its card's sha256 no longer matched, and the model was
    said to be "a copy cut short")."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"--onnx {path}: name the file .onnx, as --model takes an ONNX model by its suffix")
    unfit = model_name_unfit(path.name)
    if unfit:
        raise ValueError(f"--onnx {path}: {unfit}")
    if not path.exists():
        return
    # Its card beside it (in any models folder: the shipped one while $IPP_SEG_MODELS names another), or
    # a model of the models folder in use, reached by another name.
    try:
        named_beside = _card_beside(path)["files"]["onnx"]["name"] == path.name
    except (KeyError, TypeError):  # no card of ipp-seg's beside it, or none with an ONNX file
        named_beside = False
    owner = path.stem if named_beside else next(
        (spec.name for spec in (shipped_models() if models_dir().is_dir() else ()) if spec.onnx_path is not None
         and spec.onnx_path.exists() and os.path.samefile(spec.onnx_path, path)), None)
    if owner is not None:
        raise ValueError(f"--onnx {path} is the ONNX file of the model {owner}, which its card lists: export "
                         "elsewhere (scripts/ship_model.py --replace replaces a model whole)")


def _card_beside(path: Path) -> dict | None:
    """The JSON of the model card named as the model file ``path`` (``NAME.json`` beside
    ``NAME.onnx``), quietly; None where there is none that reads as an object."""
    try:
        card = read_json_file(path.with_suffix(".json"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def lineage_train_blocks(lineage) -> tuple[tuple[str, str], ...]:
    """The (first, last) case ID blocks that the runs of a ``lineage`` (a card's or a checkpoint's
    list of runs) recorded they trained on (``train_case_ids``: runs before 0.2.8 recorded none)."""
    return tuple((str(block[0]), str(block[1])) for step in (lineage if isinstance(lineage, list) else ())
                 if isinstance(step, dict) for block in step.get("train_case_ids") or ()
                 if isinstance(block, (list, tuple)) and len(block) == 2)


def training_blocks(spec: ModelSpec) -> tuple[tuple[str, str], ...]:
    """The case-ID blocks of the frames the model ``spec`` trained on: its card's (its own runs'
    and those its weights came through), or, without a card, those its file records
    (:func:`training_blocks_of_file`: for an ONNX file, read by opening a session)."""
    return spec.trained_case_ids + spec.earlier_trained_case_ids if spec.card is not None else \
        training_blocks_of_file(spec.onnx_path or spec.torch_path)


def warn_of_training_frames(spec: ModelSpec, scans: Sequence[Path], what: str = "scans",
                            blocks: tuple[tuple[str, str], ...] | None = None) -> list[str]:
    """The case IDs of ``scans`` (their names without suffix, in composed Unicode, or the PSFHS ID
    such a name holds, :func:`case_ids_of_name`) that are IDs of
    frames the model ``spec`` trained on (``blocks``, :func:`training_blocks` where None), logged
    as one warning: a study that measures the training frames themselves with ``predict`` or
    ``batch`` reads the model's fit to them, not what it does on new examinations (``evaluate``
    says so too). Returns them."""
    names = [case_ids_of_name(name_without_suffix(composed_name(Path(scan).name))) for scan in scans]
    blocks = training_blocks(spec) if blocks is None else blocks
    seen = sorted({case_id for ids in names for case_id in ids if in_blocks(case_id, blocks)}) if blocks else []
    if seen:
        named = sum(any(case_id in seen for case_id in ids) for ids in names)
        # ("1 of the 1 scans has" for one scan: a clinician's pass)
        counted = f"the {what.removesuffix('s')}" if len(names) == 1 else f"{named} of the {len(names)} {what}"
        log.warning("%s %s the IDs of frames %s was trained on (such as %s): if they are those frames, their values "
                    "are its fit to its training data, not what it does on new examinations (its model card lists "
                    "the frames it trained on)", counted, "has" if named == 1 else "have", spec.name,
                    ", ".join(seen[:3]))
    return seen


_FIVE_DIGITS = re.compile(r"(?<![0-9])[0-9]{5}(?![0-9])")


def case_ids_of_name(stem: str) -> tuple[str, ...]:
    """The case IDs a scan's or mask's name (less its suffix) may give: the name itself
    (``04720``), and, in a name that says it is a PSFHS frame (``psfhs_04700_us``, as the shipped
    samples are named; ``psfhs_04720_frame00002``), each 5-digit number in it: such copies had been
    measured without the warning that they are training frames."""
    numbers = tuple(_FIVE_DIGITS.findall(stem)) if "psfhs" in stem.lower() else ()
    return (stem, *numbers)


def training_blocks_of_file(path: Path | None) -> tuple[tuple[str, str], ...]:
    """The training frames of a model file run by its path: those of the model card beside it
    that describes it (its sha256), else those its ONNX metadata records (``ipp-seg export``);
    none where neither says."""
    if path is None:
        return ()
    card = _card_beside(path)
    kind = "onnx" if path.suffix == ".onnx" else "torch"
    try:
        digest = sha256_of(path)
    except OSError:
        return ()
    try:
        beside = ModelSpec(path.stem, None, None, card)
        listed = beside.card_sha256(kind)
        if listed and digest == listed:
            return beside.trained_case_ids + beside.earlier_trained_case_ids
    except AttributeError:
        pass
    # A listed model's file copied elsewhere (the shipped ONNX files record no frames of their own): its card's.
    with suppress(OSError):
        same = next((spec for spec in shipped_models() if spec.card_sha256(kind) == digest), None)
        if same is not None:
            return same.trained_case_ids + same.earlier_trained_case_ids
    return (onnx_training_blocks(path) or ()) if kind == "onnx" else checkpoint_training_blocks(path)


def checkpoint_training_blocks(path: Path) -> tuple[tuple[str, str], ...]:
    """The case-ID blocks a training checkpoint (``.pt``) says its weights trained on: its run's
    split and the runs it started from; none where it says none or cannot be read."""
    try:
        from ..train.loop import load_torch_file

        checkpoint = load_torch_file(path)
        train = (checkpoint.get("split") or {}).get("train") or []
        return tuple(tuple(block) for block in case_id_blocks([str(i) for i in train])) + lineage_train_blocks(
            checkpoint.get("lineage"))
    except Exception:  # noqa: BLE001 - no torch, or no checkpoint of ipp-seg's: it says nothing
        return ()


def onnx_training_blocks(path: str | Path) -> tuple[tuple[str, str], ...] | None:
    """The case-ID blocks (first, last) an ONNX file that ``ipp-seg export`` wrote (0.2.9 on) says
    its weights trained on: its run's (``train_case_ids``) and those of the runs it started from
    (``earlier_train_case_ids``). None where it says none (an older export, another tool's file)
    or cannot be read."""
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types; an unreadable file says nothing
        return None
    if "train_case_ids" not in meta:
        return None
    blocks = []
    for key in ("train_case_ids", "earlier_train_case_ids"):
        try:
            blocks += [(str(first), str(last)) for first, last in json.loads(meta.get(key) or "[]")]
        except (ValueError, TypeError):
            return None
    return tuple(blocks)


def in_blocks(case_id: str, blocks) -> bool:
    """Whether ``case_id`` lies in one of ``blocks`` ((first, last) as :func:`case_id_blocks` gives)."""
    return any(_in_block(case_id, first, last) for first, last in blocks)


def _in_block(case_id: str, first: str, last: str) -> bool:
    if case_id == first or case_id == last:
        return True
    parts = [_prefix_and_number(i) for i in (case_id, first, last)]
    return (None not in parts and parts[0][:2] == parts[1][:2] == parts[2][:2]
            and parts[1][2] <= parts[0][2] <= parts[2][2])


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes, hex."""
    with open(path, "rb") as fh:
        return sha256_of_stream(fh)


def sha256_of_stream(stream, digest=None) -> str:
    """The sha256, hex, of what is left to read of a binary stream, read 1 MiB at a time; with
    ``digest`` (a ``hashlib.sha256()`` fed with bytes before), of those bytes followed by it."""
    digest = digest or hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


_FILE_KINDS = (("onnx", ".onnx"), ("torch", ".pt"))


def _read_card(card_path: Path) -> dict | None:
    """A model card, or None (with a warning naming the file and why) when it is not one."""
    card, problem = _card_or_problem(card_path)
    if problem:
        log.warning("%s is left out of the models: %s", card_path, problem)
    return card


def _card_or_problem(card_path: Path) -> tuple[dict | None, str | None]:
    """(the model card at ``card_path``, None), or (None, why it is none)."""
    try:
        card = read_json_file(card_path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"it cannot be read as a model card ({exc})"
    return _checked_card(card)


def _checked_card(card) -> tuple[dict | None, str | None]:
    """(``card``, None) for the JSON of a model card ipp-seg can use, or (None, why it is none)."""
    files = card.get("files", {}) if isinstance(card, dict) else None
    if not isinstance(files, dict) or "config" not in card or "files" not in card or not all(
            isinstance(files.get(kind, {}), dict) and isinstance(files.get(kind, {}).get("name", ""), str)
            for kind, _ in _FILE_KINDS):
        return None, "it is not a model card (it needs 'config' and 'files' as scripts/ship_model.py writes them)"
    problem = _card_problem(card)
    return (None, problem) if problem else (card, None)


def model_name_unfit(name: str) -> str | None:
    """Why ``name`` cannot name a model (it fills the CSV's model cells, the reports and the DICOM
    results), or None: one beginning as a spreadsheet formula, or holding a control character (a
    newline in a card's file name split the CSV's rows for line-based readers, a security review)."""
    if begins_as_formula(name):
        return (f"a model's name may not begin with {name.lstrip()[:1]!r} (the CSV's model cells would read as "
                "spreadsheet formulas)")
    if CONTROL_CHARACTER.search(name):
        return "a model's name may not hold control characters such as a newline (they would split the CSV's rows)"
    # (A QA pass: "dssau-net-s .onnx" and "dssau-net-s<U+200B>.onnx" were named in a SEG and an SR, which drop the
    # blank, and in tables, which do not show the other, exactly as the shipped model.)
    if name != name.strip() or any(unicodedata.category(ch) == "Cf" for ch in name):
        return "a model's name may not begin or end with a blank, nor hold invisible characters"
    return None


def look_alike(name: str) -> str:
    """``name`` as a reader may take it for another: compatibility forms (a full-width letter),
    invisible characters and hyphens of other kinds (U+2010-U+2015, the minus sign) as ``-``,
    blanks around it and letter case gone."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", name) if unicodedata.category(ch) != "Cf")
    return re.sub("[\u2010-\u2015\u2212\ufe58\ufe63]", "-", text).strip().casefold()


def _card_problem(card: dict) -> str | None:
    """What makes a card with ``config`` and ``files`` no model card ipp-seg can use; None for
    none. (A security review: a card's file named ``../../elsewhere.onnx`` or by an absolute path
    had that model run, and a ``validation`` of text ended ``models`` in a traceback.)"""
    for kind, _ in _FILE_KINDS:
        name = card["files"].get(kind, {}).get("name", "")
        if name and (Path(name).name != name or "\\" in name or name in (".", "..")):
            return f"its {kind} file {name!r} is not a file name: a card names its files beside it"
        listed = card["files"].get(kind, {}).get("sha256")
        # A kind the card lists serves NAME.onnx / NAME.pt beside it, named or not: unchecked, any weights put there
        # had run under the card's name with its figures (a review: files {"onnx": {}} ran the STAR twin as the
        # default model).
        if kind in card["files"] and not (isinstance(listed, str) and re.fullmatch("[0-9a-fA-F]{64}", listed)):
            # (A QA pass: a card whose sha256 was emptied ran other weights under its name, with its figures.)
            return (f"its {kind} file {name or '(beside it)'!r} has no sha256 as scripts/ship_model.py lists it: the "
                    "file cannot be checked")
    for key, inner in (("validation", "overall"), ("validation_source", None), ("training", None)):
        value = card.get(key)
        if value is not None and not (isinstance(value, dict) and (inner is None or isinstance(
                value.get(inner, {}), dict))):
            return f"its {key!r} is not what scripts/ship_model.py writes"
    source = card.get("validation_source")
    if source and not isinstance(source.get("checkpoint"), str):
        return "its 'validation_source' names no checkpoint"
    if card.get("confidence_floors") is not None:
        return _confidence_floors_problem(card["confidence_floors"])
    return None


def _confidence_floors_problem(floors) -> str | None:
    """What makes a card's ``confidence_floors`` other than scripts/ship_model.py writes them
    (head and PS, each from the lowest floor to the shipped models' default); None for none. (A
    QA auditor's pass: floors of 0 had passed a frame of noise as measured, 0.90 and above are
    the defaults no model's own floor exceeds.)"""
    from .pipeline import LOWEST_CONFIDENCE_FLOOR, MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE

    highest = {"head": MIN_HEAD_CONFIDENCE, "ps": MIN_PS_CONFIDENCE}
    if isinstance(floors, dict) and set(floors) == set(highest) and all(
            isinstance(floors[key], (int, float)) and not isinstance(floors[key], bool)
            and LOWEST_CONFIDENCE_FLOOR <= floors[key] <= top for key, top in highest.items()):
        return None
    return (f"its confidence_floors are not those scripts/ship_model.py writes (head and ps, each from "
            f"{LOWEST_CONFIDENCE_FLOOR:.2f} to {min(highest.values()):.2f}): a lower floor would pass frames the "
            "network does not know as measured, and none lies above the shipped models' defaults")


def _model_file(folder: Path, name: str, card: dict, kind: str, suffix: str) -> Path | None:
    """The card's file of one kind: NAME.onnx / NAME.pt beside the card (a card renamed with its
    files keeps working), else the file the card names; None when the card lists none."""
    listed = card.get("files", {}).get(kind)
    if listed is None:
        return None
    beside = folder / f"{name}{suffix}"
    return beside if beside.is_file() or not listed.get("name") else folder / listed["name"]


def unreadable_cards_said(folder: Path) -> str | None:
    """What to say of the model cards in ``folder`` that its user may not read (installed under
    umask 077), with the fix; None where there are none."""
    try:
        closed = sorted(path for path in folder.glob("*.json") if not os.access(path, os.R_OK))
    except OSError:
        return None
    return _closed_said(f"the model cards in {describe_models_dir(folder)}", [path.name for path in closed],
                        "the folder")


def unreadable_files_said(specs: Sequence[ModelSpec]) -> str | None:
    """What to say of the model files of ``specs`` that their user may not read, with the fix;
    None where there are none."""
    closed = [str(path) for spec in specs for path in spec.unreadable_files]
    return _closed_said(f"{len(closed)} model file(s)", closed, "the models folder")


def mismatched_files_said(specs: Sequence[ModelSpec]) -> str | None:
    """What to say of the model files of ``specs`` that are not the files their cards describe
    (:attr:`ModelSpec.mismatched_files`), with the fix; None where there are none."""
    other = [str(path) for spec in specs for path in spec.mismatched_files]
    if not other:
        return None
    shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
    return (f"{len(other)} model file(s) are not the files their cards describe (sha256 differs: {shown}): running "
            "them is refused (the backend that runs each: --backend torch for a .pt), and their cards' figures are "
            "not shown; put back the files their cards name (reinstall ipp-seg for a shipped one), or ship the new "
            "weights with their own card (scripts/ship_model.py)")


def _closed_said(what: str, names: list[str], where: str) -> str | None:
    if not names:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"{what} cannot be read ({os.strerror(errno.EACCES)}: {shown}): whoever installed ipp-seg can let its "
            f"users read them (chmod -R a+rX on {where})")


def shipped_models() -> list[ModelSpec]:
    """Every model whose card is in the models folder, in name order; a model is named by its
    card's file name (``NAME.json``). Files that are no model card are left out with a warning."""
    folder = models_dir()
    specs = []
    for card_path in sorted(folder.glob("*.json")):
        card = _read_card(card_path)
        if card is None:
            continue
        name = card_path.stem
        unfit = model_name_unfit(name)
        if unfit:
            log.warning("%s is left out of the models: %s; rename its files", card_path, unfit)
            continue
        specs.append(ModelSpec(name, _model_file(folder, name, card, "onnx", ".onnx"),
                               _model_file(folder, name, card, "torch", ".pt"), card, card_path))
    # Names a reader takes for one (dssau\u2011net-s, a non-breaking hyphen, beside dssau-net-s): only the plain one
    # is listed (a review: both were, and a table named the other weights exactly as the default).
    groups = Counter(look_alike(spec.name) for spec in specs)
    kept = []
    for spec in specs:
        key = look_alike(spec.name)
        if groups[key] > 1 and spec.name != key:
            log.warning("%s is left out of the models: its name reads as another model's (both read as %r); rename "
                        "its files", spec.card_path, key)
            continue
        kept.append(spec)
    return kept


def check_model_file(spec: ModelSpec, path: Path, kind: str) -> str:
    """The sha256 (hex) of the ``kind`` ("onnx"/"torch") file that will serve ``spec``, which
    results record so that rows of other weights under the same name are never mixed; a
    shipped model's file that is missing or is not the file its card describes (the card's
    figures would then describe other weights) is refused.

    Raises:
        ModelNotFoundError: with what to do about it.
    """
    if spec.card is not None and not path.is_file():
        raise ModelNotFoundError(f"model {spec.name}: its card {spec.card_path} lists {path.name}, which is not in "
                                 f"{path.parent}")
    try:
        digest = sha256_of(path)
    except OSError as exc:  # no read permission (a model folder shared without it), or a disk error
        fix = (f": whoever installed ipp-seg can let its users read it (chmod a+r {path})"
               if isinstance(exc, PermissionError) else "")
        raise ModelNotFoundError(f"model {spec.name}: {path} cannot be read ({exc.strerror or exc}){fix}") from None
    listed = (spec.card or {}).get("files", {}).get(kind, {})
    expected = spec.card_sha256(kind)
    if expected and digest != expected:
        card = spec.card_path.name if spec.card_path else ""
        size, listed_size = path.stat().st_size, listed.get("bytes")
        # A copy or download cut short is no model at all: running the file itself would fail too.
        short = (f"; it holds {size:,} of the {listed_size:,} bytes the card lists (a copy cut short?)"
                 if isinstance(listed_size, int) and size < listed_size else "")
        raise ModelNotFoundError(
            f"model {spec.name}: {path} is not the file its card {card} describes (its sha256 differs){short}, so "
            f"the card's validation figures are not this model's: if it was damaged in a copy, copy it again; if "
            f"it holds other weights on purpose, ship them with scripts/ship_model.py, or copy the file to a name of "
            f"its own and give that to --model")
    return digest


def model_sha256(spec: ModelSpec, backend: str) -> str:
    """The sha256 of the file that ``backend`` ("onnx"/"torch") would run for ``spec`` (see
    :func:`check_model_file`), "" when it has none (loading it then says so)."""
    path = spec.onnx_path if backend == "onnx" else spec.torch_path
    return "" if path is None else check_model_file(spec, path, backend)


def resolve_model(name_or_path: str | None) -> ModelSpec:
    """A shipped model by name (default :data:`DEFAULT_MODEL`), or a model file by path
    (``.onnx`` for onnxruntime, ``.pt`` checkpoint for the torch backend)."""
    name_or_path = name_or_path or DEFAULT_MODEL
    path = Path(name_or_path)
    if path.suffix in (".onnx", ".pt", ".pth"):
        try:
            is_file = path.is_file()
        except OSError as exc:  # a folder on the way without search permission
            raise ModelNotFoundError(f"model file {path} cannot be read ({exc.strerror or exc})") from None
        if not is_file:
            raise ModelNotFoundError(f"model file {path} does not exist")
        name = _model_file_name(path)
        unfit = model_name_unfit(name)
        if unfit:  # (a run's best.pt is named by its run folder)
            raise ModelNotFoundError(f"model file {path}: {unfit} ({terminal_text(name)}): rename it")
        card = _card_of_file(path)
        _refuse_if_named_as_another_model(path)
        return ModelSpec(name, path if path.suffix == ".onnx" else None, path if path.suffix != ".onnx" else None,
                         card, path.with_suffix(".json") if card is not None else None, given_as_file=True)
    folder = models_dir()
    unusable = unusable_models_dir(folder)
    if unusable:
        raise ModelNotFoundError(f"model {name_or_path!r}: {unusable} (or give a .onnx/.pt path with --model)")
    specs = shipped_models()
    for spec in specs:
        if spec.name == name_or_path:
            return spec
    known = ", ".join(s.name for s in specs) or "none"
    uncarded = [folder / f"{name_or_path}{suffix}" for suffix in (".onnx", ".pt")
                if (folder / f"{name_or_path}{suffix}").is_file()]
    card_path = folder / f"{name_or_path}.json"
    unfit = model_name_unfit(name_or_path)
    if unfit:
        raise ModelNotFoundError(f"model {terminal_text(name_or_path)!r}: {unfit}: rename its files")
    if card_path.is_file() and not os.access(card_path, os.R_OK):  # (files installed under umask 077)
        raise ModelNotFoundError(f"model {name_or_path!r}: its card {card_path} cannot be read "
                                 f"({os.strerror(errno.EACCES)}): whoever installed ipp-seg can let its users read "
                                 f"the models folder's files (chmod -R a+rX {folder})")
    alike_spec = next((spec for spec in specs if look_alike(spec.name) == look_alike(name_or_path)), None)
    alike = alike_spec.name if alike_spec is not None else None
    other_card = card_path.is_file()
    with suppress(OSError, TypeError):  # (a disk blind to case: the listed model's own card, by another name)
        if other_card and alike_spec is not None and os.path.samefile(card_path, alike_spec.card_path):
            other_card = False  # (then the unknown name's "did you mean", below)
    if other_card and alike is not None and _card_or_problem(card_path)[1] is None:
        # (Left out as reading as another: a QA pass had it called damaged, "it changed while read".)
        raise ModelNotFoundError(f"model {terminal_text(name_or_path)!r}: its name reads as the model {alike!r} "
                                 f"(letter case, another hyphen or an invisible character), so it is left out: "
                                 f"rename its files in {folder}, or give --model {alike}")
    if other_card:  # there, and left out of the models (why said here too: -q keeps warnings back)
        why = _card_or_problem(card_path)[1] or "it changed while read"
        raise ModelNotFoundError(f"model {name_or_path!r}: its card {card_path} cannot be read as a model card "
                                 f"(damaged, or not written by scripts/ship_model.py: {why}): "
                                 + ("put the card back as it was shipped (in a clone: git checkout models/)"
                                    if folder.resolve() == shipped_models_dir().resolve() else
                                    "put it back as scripts/ship_model.py wrote it, or ship the model again"))
    if uncarded:  # a model exported into the folder, never given a card
        raise ModelNotFoundError(f"model {name_or_path!r}: {uncarded[0]} has no model card ({name_or_path}.json) "
                                 f"beside it, so it is not listed; run the file itself with --model {uncarded[0]}")
    instead = ""
    if (os.environ.get("IPP_SEG_MODELS") and Path(name_or_path).name == name_or_path
            and (shipped_models_dir() / f"{name_or_path}.json").is_file()):
        # a shipped model, in the folder the variable replaces
        instead = (f"; {name_or_path} is one of the models shipped with ipp-seg, which $IPP_SEG_MODELS replaces: "
                   "copy its files into that folder, or unset it")
    if path.is_file():  # (a file given, with or without its folder: not a model's name)
        raise ModelNotFoundError(f"model file {terminal_text(name_or_path)} is not a .onnx or .pt file: --model takes "
                                 f"an ONNX file (ipp-seg export) or a training checkpoint (.pt, with --backend torch), "
                                 f"or a model's name ({known})")
    if alike is not None and not instead:  # (DSSAU-Net-S: a clinician's pass)
        instead = f"; did you mean {alike}?"
    raise ModelNotFoundError(f"unknown model {name_or_path!r} (shipped in {describe_models_dir(folder)}: {known}; "
                             f"or give a .onnx/.pt path){instead}")
