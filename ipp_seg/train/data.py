"""Training data: PSFHS-layout folders and PNG image/mask pairs, split by contiguous case IDs,
and ultrasound-specific augmentation that keeps images and masks geometrically consistent.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..inference.preprocess import pad_to_square, resize_image, resize_labels
from ..io.folders import composed_name
from ..io.formats import IMAGE_SUFFIXES as _IMAGE_FORMAT_SUFFIXES
from ..io.formats import ITK_SUFFIXES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = tuple(sorted(_IMAGE_FORMAT_SUFFIXES | ITK_SUFFIXES))  # (the readers' own, not DICOM's)


#: Folders of image/mask pairs, (images, masks): PSFHS's layout, and PNG pairs. (evaluate reads them too.)
PAIRED_LAYOUTS = (("image_mha", "label_mha"), ("images", "masks"), ("images", "labels"))


def id_range(first: str, last: str) -> str:
    """A block of case IDs as ``--extra-validation`` takes it: FIRST-LAST, or FIRST..LAST where
    an ID holds a hyphen itself (``pt-01-f1..pt-01-f2``), which FIRST-LAST would make ambiguous."""
    return f"{first}..{last}" if "-" in first or "-" in last else f"{first}-{last}"


def parse_id_range(text: str) -> tuple[str, str]:
    """``FIRST-LAST`` or ``FIRST..LAST`` (as :func:`id_range` writes it) as ``(first, last)``;
    a single ID is a block of one. ValueError for anything else."""
    parts = text.split("..") if ".." in text else text.split("-")
    if len(parts) == 1 and parts[0]:
        return parts[0], parts[0]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"an ID block is FIRST-LAST, or FIRST..LAST where the IDs hold a hyphen, got {text!r}")
    return parts[0], parts[1]


def in_id_range(case_id: str, first: str, last: str) -> bool:
    """Whether ``case_id`` lies in the block ``first``..``last``, both included, in the natural
    order of IDs (numbers compare as numbers: case_9 lies between case_1 and case_10)."""
    return _sort_key(first)[0] <= _sort_key(case_id)[0] <= _sort_key(last)[0]


@dataclass(frozen=True)
class Case:
    case_id: str
    image: np.ndarray  # (H, W) greyscale as ipp_seg.io reads it: uint8, or float32 on_augmentation_scale
    labels: np.ndarray  # (H, W) uint8, 0 background, 1 PS, 2 FH


@dataclass(frozen=True)
class Split:
    train_ids: tuple[str, ...]
    validation_ids: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"train": list(self.train_ids), "validation": list(self.validation_ids)}

    def describe(self) -> str:
        """Each side as its runs of consecutive IDs, e.g. ``validation 04372-04401, 04602-04801 (230)``."""
        ordered = sorted((*self.train_ids, *self.validation_ids), key=_sort_key)

        def runs(ids):
            members = set(ids)
            blocks, start, previous = [], None, None
            for case_id in (*ordered, None):
                if case_id in members:
                    start = start or case_id
                    previous = case_id
                elif start is not None:
                    blocks.append(start if start == previous else id_range(start, previous))
                    start = None
            shown = ", ".join(blocks[:4]) + (f" and {len(blocks) - 4} more blocks" if len(blocks) > 4 else "")
            return f"{shown} ({len(ids)})" if ids else "none"
        return f"train {runs(self.train_ids)}, validation {runs(self.validation_ids)}"


def _case_id(path: Path) -> str:
    name = composed_name(path.name)  # as evaluate's case_id_of, whatever the copy did to the name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_case(case_id: str, image_path: Path, mask_path: Path, labels: tuple[int, int]) -> Case:
    """One image/mask pair. The image is read by the readers inference uses (same greyscale of a
    colour file, same scale of a 16-bit one); the mask keeps its stored values, which must be
    background 0 and the PS and FH values ``labels``, mapped to 1 and 2."""
    from ..evaluate.report import read_label_mask, relabel_mask  # values as stored: no 8-bit rescaling
    from ..io import read_frame

    image = read_frame(image_path).pixels
    stored, _ = read_label_mask(mask_path)
    # (A frame the readers turn for display beside a mask they do not: a research fellow's JPEGs with EXIF
    # orientation 6 and their PNG masks, square, had trained misaligned.)
    shown, drawn = _display_orientation(image_path), _display_orientation(mask_path)
    if shown != drawn:
        def said(orientation: int) -> str:
            return "none" if orientation == 1 else str(orientation)
        raise ValueError(f"{case_id}: the image {image_path} and its mask {mask_path} are to be shown turned or "
                         f"mirrored differently (EXIF orientation {said(shown)} and {said(drawn)}): whether the mask "
                         "was drawn on the frame as stored or as shown cannot be told. Save both without an EXIF "
                         "orientation, the image's pixels as the mask was drawn on them")
    if image.shape != stored.shape:
        raise ValueError(f"{case_id}: the image {image_path} ({_size_text(image.shape)}) and its mask {mask_path} "
                         f"({_size_text(stored.shape)}) differ in size")
    values = np.unique(image)
    if len(values) <= 4:
        # A label mask among the frames (predict and batch refuse such a frame as no ultrasound).
        raise ValueError(f"{case_id}: the image {image_path} holds {count_of(len(values), 'grey value')} "
                         f"({', '.join(f'{v:g}' for v in values)}): a label mask or a blank picture, not an "
                         "ultrasound frame; put the frame in its place")
    mapped = relabel_mask(stored, labels, (1, 2), str(mask_path), path=mask_path)
    return Case(case_id, on_augmentation_scale(image), mapped)


def on_augmentation_scale(image: np.ndarray) -> np.ndarray:
    """``image`` on the 0-255 scale :func:`augment` works on (its gain, gamma, clip and black
    borders): uint8, and numbers that lie on it (0-255, or 0-1 times 255:
    :func:`~ipp_seg.io.greyscale.on_8bit_scale`), as they are; a float frame on another scale (in
    dB, -60 to 0; 0-4000) mapped from its darkest finite value to 0 and its brightest to 255, NaN
    (outside the field of view) black. The network's input is normalised per frame by its
    percentiles, so only the relative levels count, as in inference; a dB frame had been
    augmented into a blank one, a 0-4000 one into a saturated one."""
    from ..io.greyscale import on_8bit_scale

    if image.dtype == np.uint8:
        return image
    pixels = np.asarray(image, np.float32)
    finite = np.isfinite(pixels)
    if not finite.any():
        return np.zeros(pixels.shape, np.float32)
    low, high = float(pixels[finite].min()), float(pixels[finite].max())
    if not finite.all():
        pixels = np.where(finite, pixels, np.float32(low))
    scaled = on_8bit_scale(pixels)
    if scaled is not None:
        return np.asarray(scaled, np.float32)
    # (Not on that scale: high > low.) Clipped for the last bit of float rounding.
    return np.clip((pixels - np.float32(low)) * np.float32(255.0 / (high - low)), 0, 255)


def _display_orientation(path: Path) -> int:
    """The EXIF orientation the readers apply to the image file at ``path`` (1: as stored; a
    MetaImage or NIfTI has none)."""
    from ..io.images import exif_orientation

    if path.name.lower().endswith(tuple(ITK_SUFFIXES)):  # (ITK's: no EXIF)
        return 1  # (others by their bytes, as the reader takes them: a QA pass's JPEG named .bmp was turned)
    try:
        return exif_orientation(path.read_bytes())
    except OSError:
        return 1  # (its reader has said why already)


def _mixed_label_values(folder, masks: list[Path], labels: tuple[int, int]) -> str | None:
    """Where a mask's values were refused: if the folder's masks hold two conventions (some
    0, 1, 2, others 0, 128, 255), what to say of the folder, else None. Advice for the one mask
    would name --labels for its convention, and then for the other's, in turn."""
    from ..evaluate.report import read_label_mask
    from ..io import ScanReadError

    by_values: dict[tuple, list[str]] = {}
    for path in masks:
        try:
            values = tuple(int(v) for v in np.unique(read_label_mask(path)[0]) if v != 0)
        except (ScanReadError, ValueError, OverflowError):
            continue
        if len(values) <= 4:  # (a greyscale picture has its own error)
            by_values.setdefault(values, []).append(path.name)
    fits = [v for v in by_values if len(v) == 2 and set(v) <= set(labels)]  # (blank or one structure: either)
    other = [v for v in by_values if not set(v) <= set(labels)]
    # Another convention is a pair of other values (0/128/255); one stray value is a damaged mask, said as such.
    if not fits or not any(len(v) == 2 for v in other):  # one convention: the mask's own advice is the answer
        return None
    groups = sorted(by_values.items(), key=lambda item: -len(item[1]))
    shown = "; ".join(f"{count_of(len(names), 'mask')} hold{'s' if len(names) == 1 else ''} 0, "
                      f"{', '.join(map(str, values))} (e.g. {names[0]})" for values, names in groups[:4])
    return (f"{folder}: its masks mix label conventions: {shown}. One --labels serves the whole folder: save every "
            "mask with the same values")


def _size_text(shape: tuple[int, ...]) -> str:
    """``(H, W)`` as ``W x H px``, as image sizes are usually written."""
    return f"{shape[1]} x {shape[0]} px" if len(shape) >= 2 else str(shape)


def count_of(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless 1: "1 mask", "3 masks"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def find_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(case_id, image, mask) pairs of a folder in PSFHS layout (``image_mha/``, ``label_mha/``)
    or as image pairs (``images/`` + ``masks/``, or ``<case>.png`` beside ``<case>_mask.png``, in any
    of :data:`IMAGE_SUFFIXES`), sorted by ID."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"the data folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"the data folder {folder} is a file, not a folder")
    refuse_two_mask_folders(folder)
    for image_dir, mask_dir in PAIRED_LAYOUTS:
        if (folder / image_dir).is_dir() and (folder / mask_dir).is_dir():
            _refuse_frames_in_sub_folders(folder / image_dir, folder / mask_dir)
            images = _by_case_id(folder, _frames_not_overlays(folder, (folder / image_dir).iterdir()), _case_id)
            masks = _by_case_id(folder, (p for p in (folder / mask_dir).iterdir() if _is_image_file(p)),
                                lambda p: _mask_case_id(p, images))
            pairs = [(cid, images[cid], masks[cid]) for cid in sorted(images) if cid in masks]
            _name_unpaired(folder, images, masks)
            break
    else:
        # <case>.<ext> beside <case>_mask.<ext>, in any format the readers take (a PNG frame with an MHA mask too).
        listed = list(folder.iterdir())
        files = [p for p in listed if _is_image_file(p)]
        from ..evaluate.report import without_mask_suffix  # (_mask in any letter case, as evaluate takes it)

        masks = _by_case_id(folder, (p for p in files if without_mask_suffix(_case_id(p)) is not None),
                            lambda p: without_mask_suffix(_case_id(p)))
        images = _by_case_id(folder, _frames_not_overlays(folder, (p for p in files
                                                                    if without_mask_suffix(_case_id(p)) is None)),
                             _case_id)
        pairs = [(_case_id(images[name]), images[name], masks[name]) for name in sorted(images) if name in masks]
        if masks:  # a folder with no mask at all is no training folder: said below
            _name_unpaired(folder, images, masks)
            _say_dicom_frames_are_not_read(folder, set(masks) - set(images), listed)
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs in {folder} (expected image_mha/+label_mha/, "
                                "images/+masks/, or NAME.png beside NAME_mask.png, in PNG or another image format)")
    return sorted(pairs, key=lambda t: _sort_key(t[0]))


def refuse_two_mask_folders(folder: Path) -> None:
    """Refuse (ValueError) a folder holding both ``masks/`` and ``labels/`` beside ``images/``:
    which holds the masks cannot be told (``labels/`` had been passed over without a word by
    ``train`` and ``evaluate``: a research fellow's 9 masks there went untrained and unscored)."""
    if all((folder / name).is_dir() for name in ("images", "masks", "labels")):
        raise ValueError(f"{folder} holds both masks/ and labels/ beside images/: which holds the masks cannot be "
                         "told; keep one of them")


def _refuse_frames_in_sub_folders(*folders: Path) -> None:
    """Refuse (ValueError) an ``images/`` or masks' folder with frames or masks in folders below
    it (``images/pt01/f0.png``, at any depth): ``train`` reads the folder itself, and had said
    there were no pairs at all, or (with frames beside those folders) left theirs out without a
    word (a QA pass)."""
    for folder in folders:
        below = sorted({p.relative_to(folder).parts[0] for p in folder.glob("*/**/*")
                        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
                        and _is_image_file(p)})
        if below:
            shown = ", ".join(below[:3]) + (", ..." if len(below) > 3 else "")
            raise ValueError(f"{folder} holds frames in folders below it ({shown}), and train reads the frames in "
                             f"{folder.name}/ itself: put them there (images and masks alike), named by case IDs "
                             f"unique across the folder ({below[0]}_f0.png), in an order that keeps an examination's "
                             "frames together")


def _frames_not_overlays(folder: Path, paths) -> list[Path]:
    """The image files among ``paths``, less the overlays ipp-seg wrote (``predict --out`` into the
    data folder), left out with a line that says so: they had been named as images without a
    mask (a QA pass)."""
    from ..io.images import ipp_seg_png_kind

    images, overlays = [], []
    for path in paths:
        if _is_image_file(path):
            is_overlay = path.name.lower().endswith(".png") and ipp_seg_png_kind(path) == "overlay"
            (overlays if is_overlay else images).append(path)
    if overlays:
        log.warning("%s: %s that ipp-seg wrote, left out (pictures, not frames): %s%s", folder,
                    count_of(len(overlays), "overlay"), ", ".join(p.name for p in sorted(overlays)[:5]),
                    " ..." if len(overlays) > 5 else "")
    return images


def _by_case_id(folder: Path, paths, case_id_of) -> dict[str, Path]:
    """Case ID -> file. Two files of one ID (``04402.png`` beside the ``04402.tif`` it was
    converted from) are refused, naming both: which one paired with the mask would otherwise
    depend on the order the system lists them in, and a wrong one trains against another frame's mask."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        case_id = case_id_of(path)
        if case_id in found:
            raise ValueError(f"{folder}: case ID {case_id!r} has two files, {found[case_id].relative_to(folder)} and "
                             f"{path.relative_to(folder)}: keep one of them")
        found[case_id] = path
    return found


def _mask_case_id(path: Path, images: dict[str, Path]) -> str:
    """A mask's case ID: its name, or the name without ``_mask`` as ``predict --out`` writes it
    (``masks/04402_mask.png`` pairs with ``images/04402.png``) unless an image bears the longer name."""
    from ..evaluate.report import without_mask_suffix

    case_id = _case_id(path)
    stripped = without_mask_suffix(case_id)
    if stripped is not None and case_id not in images and stripped in images:
        return stripped
    return case_id


def _name_unpaired(folder: Path, images: dict, masks: dict) -> None:
    """Not an error (a folder may be annotated in part), but never silent: a user must know
    which frames a model was not trained or validated on."""
    for noun, without, ids in (("image", "without a mask", sorted(set(images) - set(masks), key=_sort_key)),
                               ("mask", "without an image", sorted(set(masks) - set(images), key=_sort_key))):
        if ids:
            log.warning("%s: %s %s, left out: %s%s", folder, count_of(len(ids), noun), without,
                        ", ".join(ids[:10]), " ..." if len(ids) > 10 else "")


def _say_dicom_frames_are_not_read(folder: Path, case_ids: set[str], listed: list[Path]) -> None:
    """Where a mask without an image has a DICOM file of its case beside it (among ``listed``, the
    folder's entries), say that train reads no DICOM (a QA pass: "mask without an image" beside
    the very scan had read as a bug)."""
    from ..io.formats import DICOM_SUFFIXES

    dicom = {path.stem for path in listed if path.suffix.lower() in DICOM_SUFFIXES and path.is_file()}
    beside = sorted(case_ids & dicom, key=_sort_key)
    if beside:
        log.warning("%s: %s beside a DICOM file of its case, which train does not read: export such frames as PNG "
                    "(or TIFF, MHA): %s%s", folder, count_of(len(beside), "mask"), ", ".join(beside[:10]),
                    " ..." if len(beside) > 10 else "")


def _sort_key(case_id: str):
    """Natural order of the whole name: numbers compare as numbers (04380 < 04381; case_9 <
    case_10), and patient01_frame004 stays with patient01's frames, before patient02_frame001,
    so that a contiguous block of names is a block of examinations."""
    parts = re.split(r"(\d+)", case_id)
    return ([(0, int(p)) if p.isdigit() else (1, p) for p in parts if p], case_id)


def load_cases(folder: str | Path, ids: set[str] | None = None, labels: tuple[int, int] = (1, 2),
               pairs: list[tuple[str, Path, Path]] | None = None) -> list[Case]:
    """Load every pair (or those whose ID is in ``ids``) into memory, the masks' PS and FH
    values ``labels`` mapped to 1 and 2. ``pairs``: the folder's :func:`find_pairs`, when the
    caller has them already (the folder is then not scanned, nor its unpaired files named,
    a second time).

    Raises:
        ValueError: a file cannot be read, an image and its mask differ in size, or a mask
        holds values other than 0 and ``labels``.
    """
    from ..io import ScanReadError

    cases = []
    chosen = [(c, i, m) for c, i, m in (find_pairs(folder) if pairs is None else pairs) if ids is None or c in ids]
    for case_id, image_path, mask_path in chosen:
        try:
            cases.append(_read_case(case_id, image_path, mask_path, labels))
        except ScanReadError as exc:  # already "cannot read PATH: why"
            raise ValueError(str(exc)) from None
        except ValueError as exc:
            mixed = _mixed_label_values(folder, [m for _, _, m in chosen], labels)
            raise ValueError(mixed or str(exc)) from None
    # Not refused (a frame may show neither), but said: most often a mask exported empty.
    blank = [c.case_id for c in cases if not c.labels.any()]
    if blank:
        log.warning("%s: %s with neither a PS nor a FH (trained as background only): %s%s", folder,
                    count_of(len(blank), "mask"), ", ".join(blank[:10]), " ..." if len(blank) > 10 else "")
    # One structure missing: a frame may not show it, or the annotation lost it (an erased layer);
    # either way the network is taught that it is background there, as evaluate says of such a truth.
    for label, name in ((1, "PS"), (2, "FH")):
        lacking = [c.case_id for c in cases if c.labels.any() and not (c.labels == label).any()]
        if lacking:
            log.warning("%s: %s without a %s (label %d; trained as background there): %s%s", folder,
                        count_of(len(lacking), "mask"), name, labels[label - 1], ", ".join(lacking[:10]),
                        " ..." if len(lacking) > 10 else "")
    _warn_if_labels_look_swapped(folder, cases, labels)
    _warn_if_masks_look_interpolated(folder, cases)
    _warn_if_masks_drawn_by_ipp_seg(folder, chosen)
    return cases


def _warn_if_masks_drawn_by_ipp_seg(folder, chosen: list[tuple[str, Path, Path]]) -> None:
    """Not refused (a model may be trained on another's masks on purpose), but said: a mask that
    ipp-seg wrote (its PNG says so) is a network's output, and a model trained on it learns that
    network's mistakes as truth (a research fellow's folder of predict's masks had trained
    without a word)."""
    from ..io.images import ipp_seg_png_kind

    drawn = [case_id for case_id, _, mask in chosen if mask.suffix.lower() == ".png"
             and ipp_seg_png_kind(mask) == "label mask"]
    if drawn:
        log.warning("%s: %d of the %d masks %s written by ipp-seg, a model's masks and not an expert's outlines "
                    "(%s%s): trained on, they teach that model's mistakes as truth", folder, len(drawn), len(chosen),
                    "was" if len(drawn) == 1 else "were", ", ".join(drawn[:10]), " ..." if len(drawn) > 10 else "")


#: In every PSFHS expert mask the PS is one piece (two in one mask) and touches no head pixel. A
#: mask resized with linear or cubic interpolation turns the head's edge (2 beside 0) into a thin
#: ring of 1: a PS of about 50 pieces around the head, 18 % of its pixels against the head's.
INTERPOLATED_PS_PIECES = 5
INTERPOLATED_PS_ON_HEAD_SHARE = 0.05


def _warn_if_masks_look_interpolated(folder, cases: list[Case]) -> None:
    import cv2

    flagged = []
    for case in cases:
        ps, fh = (case.labels == 1).astype(np.uint8), (case.labels == 2).astype(np.uint8)
        if not ps.any() or not fh.any():
            continue
        pieces = cv2.connectedComponents(ps, connectivity=8)[0] - 1
        on_head = np.count_nonzero(cv2.dilate(fh, np.ones((3, 3), np.uint8)) & ps) / np.count_nonzero(ps)
        if pieces >= INTERPOLATED_PS_PIECES and on_head > INTERPOLATED_PS_ON_HEAD_SHARE:
            flagged.append(case.case_id)
    if flagged:
        log.warning("%s: in %s the PS lies in many pieces along the head's edge, as in a mask resized with linear or "
                    "cubic interpolation (the head's border becomes a ring of PS label): resize masks with "
                    "nearest-neighbour interpolation (cv2.INTER_NEAREST), or the network learns that ring as the "
                    "symphysis: %s%s", folder, count_of(len(flagged), "mask"), ", ".join(flagged[:10]),
                    " ..." if len(flagged) > 10 else "")


#: The PS's area is at most 0.29 of the head's in every one of the 1,058 PSFHS expert masks
#: (median 0.12): a folder whose "PS" is the larger in most masks has its two labels swapped.
def _warn_if_labels_look_swapped(folder, cases: list[Case], labels: tuple[int, int]) -> None:
    both = [c for c in cases if (c.labels == 1).any() and (c.labels == 2).any()]
    larger = [c.case_id for c in both if np.count_nonzero(c.labels == 1) > np.count_nonzero(c.labels == 2)]
    if both and len(larger) * 2 > len(both):
        log.warning("%s: in %d of %d masks the pubic symphysis (label %d) is larger than the fetal head (label %d), "
                    "where it is the smaller in every PSFHS expert mask: are the labels swapped? "
                    "(--labels ps=%d,fh=%d)", folder, len(larger), len(both), labels[0], labels[1], labels[1], labels[0])


def frames_in_both(cases: list[Case], split: Split) -> list[tuple[str, str]]:
    """(validation ID, training ID) pairs whose images hold the same pixels: a frame copied under
    another name (``04435 (1).png``) trains on what its validation then scores."""
    import hashlib

    def digest(case: Case) -> str:
        return hashlib.sha256(np.ascontiguousarray(case.image).tobytes() + str(case.image.shape).encode()).hexdigest()

    by_id = {c.case_id: c for c in cases}
    trained: dict[str, str] = {}
    for case_id in split.train_ids:
        if case_id in by_id:
            trained.setdefault(digest(by_id[case_id]), case_id)
    return [(case_id, trained[d]) for case_id in split.validation_ids if case_id in by_id
            and (d := digest(by_id[case_id])) in trained]


def on_inference_grid(cases: list[Case], input_size: tuple[int, int]) -> list[Case]:
    """The cases as inference lays a frame out: cut as it cuts a frame of no imaging region
    (:func:`cut_as_inference_cuts`), then each padded with background at the bottom or right to a
    square (``pad_to_square``), so that a non-square frame keeps the aspect ratio the trained
    network will see in use. When the squares differ in size (a folder of mixed frames), each
    case is also resized to the network input (labels by nearest neighbour), so that every batch
    shares one label grid. Square frames of one size are returned unchanged.
    """
    cut = [cut_as_inference_cuts(c) for c in cases]
    if any(a is not b for a, b in zip(cut, cases)):
        log.info("%d frame(s) cut as inference cuts them (bands of one level around the image, lines drawn around "
                 "it)", sum(a is not b for a, b in zip(cut, cases)))
    squared = [c if c.image.shape[0] == c.image.shape[1] else
               Case(c.case_id, pad_to_square(c.image), pad_to_square(c.labels, fill=0)) for c in cut]
    sizes = {c.image.shape for c in squared}
    if len(sizes) <= 1:
        return squared
    log.info("frames of %d sizes: each resized to the network input %s for training", len(sizes), tuple(input_size))
    # In float, as inference resizes a frame: no rounding back to uint8.
    return [Case(c.case_id, resize_image(c.image.astype(np.float32), input_size),
                 resize_labels(c.labels, input_size)) for c in squared]


def cut_as_inference_cuts(case: Case) -> Case:
    """``case`` as inference shows a frame without an imaging region to the network: the bands of
    one level around the image cut off (:func:`~ipp_seg.inference.pipeline.trim_uniform_bands`, in
    pixels: a case has no spacing) and lines drawn around it covered
    (:func:`~ipp_seg.inference.pipeline.cover_border_lines`), its labels cut alike. Training had
    shown such frames whole, a network then meeting them cut in use. ``case`` itself where
    neither changes it (every PSFHS frame)."""
    from ..inference.pipeline import cover_border_lines, trim_uniform_bands

    h, w = case.image.shape[:2]
    box = trim_uniform_bands(case.image, (0, 0, w, h))
    x0, y0, x1, y1 = box
    image = case.image[y0:y1, x0:x1]
    covered = cover_border_lines(image)
    if box == (0, 0, w, h) and covered is image:
        return case
    return Case(case.case_id, np.ascontiguousarray(covered), np.ascontiguousarray(case.labels[y0:y1, x0:x1]))


def contiguous_split(case_ids: list[str], validation_count: int = 200,
                     extra_validation: tuple[str, str] | None = None) -> Split:
    """Validation = the last ``validation_count`` IDs (in ID order), plus optionally a
    contiguous block ``(first, last)`` of IDs; the rest is training. Never random: consecutive
    IDs can come from one examination."""
    if validation_count < 0:
        raise ValueError(f"the validation count must be 0 or more, got {validation_count}")
    ordered = sorted(case_ids, key=_sort_key)
    validation = set(ordered[-validation_count:]) if validation_count else set()
    if extra_validation:
        first, last = extra_validation
        lo, hi = _sort_key(first)[0], _sort_key(last)[0]
        if lo > hi:
            raise ValueError(f"--extra-validation {id_range(first, last)}: the first ID comes after the last")
        block = {c for c in ordered if in_id_range(c, first, last)}
        if not block:
            if not ordered:
                raise ValueError(f"--extra-validation {id_range(first, last)}: no cases")
            raise ValueError(f"--extra-validation {id_range(first, last)} matches no case ID (they run "
                             f"{id_range(ordered[0], ordered[-1])})")
        # Both ends must be case IDs: a mistyped end (pt099 for pt009) had swept every later
        # case into validation, and the run trained on a quarter of the frames.
        unknown = [end for end in (first, last) if end not in set(ordered)]
        if unknown:
            held = sorted(block, key=_sort_key)
            raise ValueError(f"--extra-validation {id_range(first, last)}: {' and '.join(unknown)} "
                             f"{'is no case ID' if len(unknown) == 1 else 'are no case IDs'} (the range would hold "
                             f"{len(held)} cases, {id_range(held[0], held[-1])}): give the first and last case "
                             "IDs of the block")
        validation |= block
    return Split(tuple(c for c in ordered if c not in validation), tuple(c for c in ordered if c in validation))


# --- augmentation -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentationSettings:
    rotation_deg: float = 20.0
    scale_range: tuple[float, float] = (0.65, 1.3)
    translate_fraction: float = 0.1
    flip_probability: float = 0.5
    gain_range: tuple[float, float] = (0.6, 1.5)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    depth_gain_probability: float = 0.3
    speckle_probability: float = 0.4
    speckle_sigma: float = 0.25
    blur_probability: float = 0.3
    sector_probability: float = 0.25
    # Off by default so that earlier recipes draw the same random stream. Elastic: a smooth
    # random displacement field (tissue and probe-pressure deformation), amplitude in pixels,
    # smoothness as the Gaussian's sigma in pixels. Shadow: a dark band along the beam below a
    # random depth, as bone or gas casts; the labels keep the structures under it.
    elastic_probability: float = 0.0
    elastic_alpha_px: float = 6.0
    elastic_sigma_px: float = 16.0
    shadow_probability: float = 0.0


def _sector_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random fan-shaped field of view (apex above the top edge), as a narrow or deep sector
    probe shows it; 1 inside, 0 outside."""
    h, w = shape
    apex = (w * rng.uniform(0.35, 0.65), -h * rng.uniform(0.05, 0.4))
    half_angle = math.radians(rng.uniform(25, 45))
    depth = h * rng.uniform(0.9, 1.5) - apex[1]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - apex[0], ys - apex[1]
    radius = np.hypot(dx, dy)
    angle = np.abs(np.arctan2(dx, dy))
    return ((angle <= half_angle) & (radius <= depth)).astype(np.float32)


def _elastic_maps(shape: tuple[int, int], alpha_px: float, sigma_px: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps for a smooth random displacement whose largest component is ``alpha_px``."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = []
    for grid in (xs, ys):
        field = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma_px)
        field *= alpha_px / max(float(np.abs(field).max()), 1e-6)
        maps.append(grid + field)
    return maps[0], maps[1]


def _shadow(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative gain of an acoustic shadow: a soft-edged vertical band, 5-20 % of the
    width, from a random depth to the bottom, attenuated to 10-50 %."""
    h, w = shape
    width = rng.uniform(0.05, 0.2) * w
    x0 = rng.uniform(0, w - width)
    y0 = int(rng.uniform(0.15, 0.8) * h)
    gain = np.ones((h, w), np.float32)
    gain[y0:, int(x0):int(x0 + width) + 1] = rng.uniform(0.1, 0.5)
    return cv2.GaussianBlur(gain, (0, 0), min(3.0, width / 4))  # soft edges, not a filled-in band


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            settings: AugmentationSettings = AugmentationSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Random geometric and acquisition-like changes. Returns (float32 image in 0-255 range,
    uint8 labels); the same geometric transform is applied to both."""
    h, w = image.shape
    s = settings
    angle = rng.uniform(-s.rotation_deg, s.rotation_deg)
    scale = math.exp(rng.uniform(math.log(s.scale_range[0]), math.log(s.scale_range[1])))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-s.translate_fraction, s.translate_fraction, 2) * (w, h)
    img = cv2.warpAffine(image.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    lab = cv2.warpAffine(labels, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    if s.elastic_probability and rng.random() < s.elastic_probability:
        map_x, map_y = _elastic_maps((h, w), s.elastic_alpha_px, s.elastic_sigma_px, rng)
        img = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        lab = cv2.remap(lab, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if rng.random() < s.flip_probability:
        img, lab = img[:, ::-1], lab[:, ::-1]

    img = img / 255.0
    img = np.power(np.clip(img, 0, None), rng.uniform(*s.gamma_range)) * rng.uniform(*s.gain_range)
    if rng.random() < s.depth_gain_probability:  # time-gain-compensation-like ramp with depth
        ramp = np.linspace(rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.4), h, dtype=np.float32)
        img = img * ramp[:, None]
    if rng.random() < s.speckle_probability:  # multiplicative, spatially correlated noise
        noise = rng.standard_normal((h, w)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 1.5))
        noise /= max(float(noise.std()), 1e-6)
        img = img * np.clip(1 + rng.uniform(0, s.speckle_sigma) * noise, 0, None)
    if rng.random() < s.blur_probability:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if s.shadow_probability and rng.random() < s.shadow_probability:
        img = img * _shadow((h, w), rng)
    if rng.random() < s.sector_probability:
        fan = _sector_mask((h, w), rng)
        img = img * fan
        lab = lab * fan.astype(np.uint8)
    img = np.clip(img * 255.0, 0, 255).astype(np.float32)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)
