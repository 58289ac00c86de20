"""Plain data the readers hand out: frames, their calibrated regions, provenance and frame choices.

Coordinates are frame pixel coordinates: x is the column, y the row, (0, 0) the top-left pixel.
Spacings are (x, y) in millimetres per pixel; ``None`` means the physical size is unknown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..measure.result import SPACING_SOURCES, check_spacing

Spacing = tuple[float, float]

# The most pixels a frame may have (rows x columns): a 4K screen capture is 8.3 million, the
# largest ultrasound frames about 1. A file declaring more is refused before it is decoded: a
# few kilobytes can declare a 30000 x 30000 frame (a decompression bomb) whose decoding takes
# gigabytes, or makes a native decoder abort the process.
MAX_FRAME_PIXELS = 40_000_000


def too_many_pixels(width: int, height: int) -> str | None:
    """The refusal for a frame of ``width`` x ``height`` pixels beyond :data:`MAX_FRAME_PIXELS`,
    else None."""
    if width * height <= MAX_FRAME_PIXELS:
        return None
    return (f"its frame of {width} x {height} pixels is beyond the {MAX_FRAME_PIXELS // 1_000_000} million "
            "pixels ipp-seg reads (a damaged header, a file made to exhaust memory, or not a single ultrasound "
            "frame)")


@dataclass(frozen=True)
class ImagingRegion:
    """One 2-D tissue region of a frame: the pixel box [x0, x1) x [y0, y1).

    ``spacing_mm`` is the region's own calibration, (x, y) mm per pixel, or ``None`` when the
    source gives none for it.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: Spacing | None = None

    def __post_init__(self) -> None:
        # (A region built by hand with a negative, NaN or text spacing had failed only at prediction: a QA pass.)
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if not _whole_number(value):
                raise TypeError(f"an ImagingRegion's {name} is a whole number of pixels, got {value!r}")
            # A Python int: np.uint16 corners had overflowed the area (256 x 256 read 0), and another region was
            # taken for the image (a QA pass).
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm))

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        """Area in pixels."""
        return max(0, self.width) * max(0, self.height)

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x, y), in pixels, lies inside the box (upper edges excluded)."""
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


@dataclass(frozen=True)
class Provenance:
    """Where a frame came from.

    ``source_format`` is ``"dicom"``, ``"image"`` (OpenCV formats), ``"itk"`` (SimpleITK
    formats) or ``"array"`` (pixels handed over in memory). ``frame_number`` is the 1-based
    DICOM frame number (``None`` for other formats). The UIDs are a DICOM file's own (``None``
    for other formats, or where the header holds no valid UID): with them a result joins back
    to its study and series. ``burned_in_text``: a DICOM file says text is burnt into its
    pixels (Burned In Annotation YES), such as the patient's name in a banner. ``frame_time_ms``:
    a DICOM cine frame's time after the cine's first frame, in ms, from its Frame Time or Frame
    Time Vector (``None`` for a single frame, other formats, or a header that gives no usable time).
    """

    path: str
    source_format: str
    sop_instance_uid: str | None = None
    frame_number: int | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    burned_in_text: bool = False
    frame_time_ms: float | None = None

    def __post_init__(self) -> None:
        # Checked as made, as UltrasoundFrame is: a NaN time, or a numpy number, had made a report no strict JSON
        # writer takes (a library user's pass).
        if self.frame_number is not None:
            if not _whole_number(self.frame_number) or self.frame_number < 1:
                raise ValueError(f"a Provenance's frame_number is the 1-based DICOM frame number or None, got "
                                 f"{self.frame_number!r}")
            object.__setattr__(self, "frame_number", int(self.frame_number))
        if self.frame_time_ms is not None:
            time = self.frame_time_ms
            if isinstance(time, (bool, np.bool_)) or not isinstance(time, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(time) or time < 0:
                raise ValueError(f"a Provenance's frame_time_ms is a time in ms from the cine's first frame (a finite "
                                 f"number, 0 or more) or None, got {time!r}")
            object.__setattr__(self, "frame_time_ms", float(time))


@dataclass(frozen=True, eq=False)  # (compared by identity: == of its arrays has no single truth value)
class UltrasoundFrame:
    """One greyscale ultrasound frame with its physical calibration.

    ``pixels`` is (H, W), either uint8 (0-255) or float32. float32 comes from sources deeper
    than 8 bits, rescaled from their integer range onto the same 0-255 scale as uint8, or from
    floating-point sources, passed through unchanged. Never colour.

    ``spacing_mm`` is the (x, y) mm-per-pixel calibration of the whole frame when a single
    calibration applies to it, or the caller's spacing for what no calibrated region covers;
    ``None`` when it is unknown, or when the regions carry different calibrations, or some
    carry none (then use :meth:`spacing_at`: a region's calibration never stands in for
    another's). ``spacing_source`` says where ``spacing_mm`` came from (one of
    :data:`ipp_seg.measure.SPACING_SOURCES`; None when the spacing is unknown). ``regions``
    are the 2-D tissue regions (empty when the source says nothing about them). ``frame_index``
    is 0-based, ``n_frames`` the number of frames in the source. ``colour_marks``: for a colour
    source, an (H, W) bool mask of the pixels drawn in a colour apart from the frame's own tint
    (calipers, lines and text a scanner draws in colour, colour flow;
    :func:`ipp_seg.io.greyscale.colour_marks`), None where there are none or the source is grey.
    """

    pixels: np.ndarray
    spacing_mm: Spacing | None
    regions: tuple[ImagingRegion, ...]
    frame_index: int
    n_frames: int
    provenance: Provenance
    spacing_source: str | None = None
    colour_marks: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Checked as made: a frame built by hand had failed later, deep in a measurement, as a bare
        # TypeError or AttributeError (a library user's pass).
        if not isinstance(self.pixels, np.ndarray):
            raise TypeError(f"an UltrasoundFrame's pixels are a numpy array, got {type(self.pixels).__name__} "
                            "(np.asarray(...) first, or Predictor.predict_pixels, which takes any array-like)")
        if not (np.issubdtype(self.pixels.dtype, np.number) or self.pixels.dtype == np.bool_) \
                or np.iscomplexobj(self.pixels):
            raise ValueError(f"an UltrasoundFrame's pixels hold real numbers, got dtype {self.pixels.dtype}")
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm))
        if self.regions is None or isinstance(self.regions, (str, bytes, ImagingRegion)):
            raise TypeError(f"an UltrasoundFrame's regions are a tuple of ImagingRegion objects (empty where the "
                            f"source names none), got {self.regions!r}")
        object.__setattr__(self, "regions", tuple(self.regions))
        if not all(isinstance(region, ImagingRegion) for region in self.regions):
            raise TypeError("an UltrasoundFrame's regions are ImagingRegion objects (an empty tuple where the "
                            "source names none)")
        if not isinstance(self.provenance, Provenance):
            raise TypeError(f"an UltrasoundFrame's provenance is a Provenance, got {type(self.provenance).__name__} "
                            "(Provenance('<memory>', 'array') for pixels held in memory)")
        for name, least in (("frame_index", 0), ("n_frames", 1)):
            value = getattr(self, name)
            if not _whole_number(value) or value < least:
                raise ValueError(f"an UltrasoundFrame's {name} is an integer from {least}, got {value!r}")
            object.__setattr__(self, name, int(value))  # (a numpy integer as Python's: reports are JSON)
        if self.frame_index >= self.n_frames:
            raise ValueError(f"an UltrasoundFrame's frame_index ({self.frame_index}) must be below its n_frames "
                             f"({self.n_frames}): frames are counted from 0")
        if self.colour_marks is not None and not isinstance(self.colour_marks, np.ndarray):
            raise TypeError(f"an UltrasoundFrame's colour_marks are a boolean numpy array or None, got "
                            f"{type(self.colour_marks).__name__}")
        if self.pixels.ndim != 2:
            raise ValueError(f"an UltrasoundFrame holds (H, W) greyscale pixels, got shape {self.pixels.shape} "
                             "(colour frames: ipp_seg.io.greyscale.luminance_rgb first)")
        if self.colour_marks is not None and self.colour_marks.shape != self.pixels.shape:
            raise ValueError(f"colour_marks must be a mask of the frame's {self.pixels.shape} pixels, "
                             f"got shape {self.colour_marks.shape}")
        if self.spacing_source is not None and self.spacing_source not in SPACING_SOURCES:
            raise ValueError(f"spacing_source must be one of {', '.join(SPACING_SOURCES)} or None, "
                             f"got {self.spacing_source!r}")

    def spacing_at(self, x: float, y: float) -> Spacing | None:
        """(x, y) mm per pixel at pixel (x, y).

        The calibration of the region that contains the point when that region has one,
        otherwise the frame's calibration (possibly ``None``). Where regions overlap at the
        point (a zoom box inside the image) and do not carry one calibration, ``None``: which
        one the pixels there are drawn at is not known.
        """
        return self.calibration_at(x, y)[0]

    def calibration_at(self, x: float, y: float) -> tuple[Spacing | None, str | None]:
        """(spacing, source) at pixel (x, y): as :meth:`spacing_at`, with where that spacing
        came from (``"ultrasound_region"`` for a region's own calibration; the frame's
        ``spacing_source`` otherwise; None when the spacing is unknown)."""
        containing = [region.spacing_mm for region in self.regions if region.contains(x, y)]
        if any(spacing is not None for spacing in containing):
            # Overlapping regions of other calibrations, or one of none: the order they are listed
            # in had chosen the millimetres (a zoom box's 0.1 mm for the whole image's 0.35).
            return (containing[0], "ultrasound_region") if spacings_agree(containing) else (None, None)
        if self.spacing_mm is None:
            return None, None
        return self.spacing_mm, self.spacing_source

    def calibrated_alike_over(self, drawn: np.ndarray, least_share: float = 0.01) -> bool:
        """Whether the pixels ``drawn`` (an (H, W) bool mask of the frame, such as a measurement's
        structures) lie in regions of one calibration: False where regions that each hold at least
        ``least_share`` of them are calibrated otherwise (each its own calibration, or the frame's
        where it has none): a zoom box over the head, the PS outside it, had given the HSD in the
        image's millimetres, ``ok``. Pixels outside every region, and a frame of fewer than two
        regions, raise no doubt."""
        total = int(np.count_nonzero(drawn))
        if total == 0 or len(self.regions) < 2:
            return True
        held = [region.spacing_mm if region.spacing_mm is not None else self.spacing_mm for region in self.regions
                if np.count_nonzero(drawn[region.y0:region.y1, region.x0:region.x1]) >= least_share * total]
        return all(spacing is None for spacing in held) or spacings_agree(held)

    def calibrated_as_at(self, points, spacing: Spacing) -> bool:
        """Whether every one of ``points`` ((x, y) pixels; None passed over) lies where the frame's
        calibration (:meth:`calibration_at`) is ``spacing``: the points a measurement's distances
        run between, where :meth:`calibrated_alike_over` lets a box over 1 % of the anatomy or
        less pass (17 pixels over where the HSD meets the head had kept the image's mm). Always
        where the frame declares fewer than two regions."""
        if len(self.regions) < 2:
            return True
        return all(spacings_agree([spacing, self.calibration_at(float(point[0]), float(point[1]))[0]])
                   for point in points if point is not None)

    @property
    def imaging_region(self) -> ImagingRegion | None:
        """The largest 2-D tissue region (the first of equal ones), or ``None`` when none is known."""
        if not self.regions:
            return None
        return max(self.regions, key=lambda r: r.area)

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return int(self.pixels.shape[1])


def frames_held(n_frames: int) -> str:
    """How many frames a source holds and their indices, for messages: "1 frame (frame 0)"."""
    if n_frames < 1:
        return "no frame"
    return "1 frame (frame 0)" if n_frames == 1 else f"{n_frames} frames (0-{n_frames - 1})"


#: The most frames a list of frames (``--frames 0,5,9``) may name: a longer choice is a range.
MAX_LISTED_FRAMES = 10_000


@dataclass(frozen=True)
class FrameSelection:
    """A choice of 0-based frames: every ``step``-th frame from ``start`` up to ``stop``
    (exclusive), as Python's ``range``; or the frames ``listed``, in ascending order.

    ``stop=None`` means "to the last frame"; ``FrameSelection()`` is every frame, and
    ``FrameSelection(step=10)`` every tenth from frame 0 (a long cine sampled through).
    ``FrameSelection(listed=(0, 5, 9))`` is frames 0, 5 and 9 (given in any order, repeats
    dropped; with start, stop and step left as they are).
    """

    start: int = 0
    stop: int | None = None
    step: int = 1
    listed: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.listed is not None:
            self._check_listed()
        for name in ("start", "stop"):
            value = getattr(self, name)
            if value is not None or name == "start":
                if not _whole_number(value):
                    raise ValueError(f"frame selection {name} must be a whole number, got {value!r}")
                object.__setattr__(self, name, int(value))
        if self.start < 0:
            raise ValueError(f"frame selection start must be >= 0, got {self.start}")
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"frame selection is empty: start {self.start}, stop {self.stop}")
        if not _whole_number(self.step) or self.step < 1:
            raise ValueError(f"frame selection step must be a whole number >= 1, got {self.step!r}")
        object.__setattr__(self, "step", int(self.step))

    def _check_listed(self) -> None:
        if isinstance(self.listed, (str, bytes)) or not hasattr(self.listed, "__iter__"):
            raise ValueError(f"frame selection listed must be frame indices, got {self.listed!r}")
        listed = tuple(self.listed)
        if not all(_whole_number(i) and i >= 0 for i in listed):
            raise ValueError(f"listed frames must be whole numbers >= 0, got {listed!r}")
        if not listed:
            raise ValueError("frame selection is empty: no frame listed")
        if (self.start, self.stop, self.step) != (0, None, 1):
            raise ValueError("a frame selection is either listed frames or start, stop and step, not both")
        listed = tuple(sorted({int(i) for i in listed}))
        if len(listed) > MAX_LISTED_FRAMES:
            raise ValueError(f"a list names at most {MAX_LISTED_FRAMES:,} frames ({len(listed):,} given): for more, "
                             "give a range, A-B/S")
        if listed[-1] - listed[0] + 1 == len(listed):  # one run of frames: the range it is, as '3,4,5' is '3-5'
            object.__setattr__(self, "start", listed[0])
            object.__setattr__(self, "stop", listed[-1] + 1)
            listed = None
        object.__setattr__(self, "listed", listed)

    @property
    def is_all(self) -> bool:
        """Whether this selects every frame."""
        return self.listed is None and self.start == 0 and self.stop is None and self.step == 1

    def after(self, index: int) -> FrameSelection | None:
        """The frames of this selection after frame ``index``, None where it holds none (a
        cine read on past a damaged frame takes the selection's next frames, its step kept)."""
        if self.listed is not None:
            later = tuple(i for i in self.listed if i > index)
            return FrameSelection(listed=later) if later else None
        start = max(self.start, index + 1)
        start += -(start - self.start) % self.step  # (on the step's grid from self.start)
        if self.stop is not None and start >= self.stop:
            return None
        return FrameSelection(start, self.stop, self.step)

    def indices(self, n_frames: int) -> Sequence[int]:
        """The selected 0-based indices in a source of ``n_frames`` frames, ascending: those of
        the selection that the source has (``0-4`` of a still image is its frame 0, of a 3-frame
        cine its frames 0-2; ``0,5,9`` of a 6-frame cine its frames 0 and 5), so that one choice
        serves a folder of cines and stills. A ``range`` for a range.

        Raises ``IndexError`` when the source has none of them.
        """
        if self.listed is not None:
            held = [i for i in self.listed if i < n_frames]
            if not held:
                raise IndexError(f"frames {self} requested, the source has {frames_held(n_frames)}")
            return held
        stop = n_frames if self.stop is None else min(self.stop, n_frames)
        if self.start >= n_frames:
            raise IndexError(f"frames {self} requested, the source has {frames_held(n_frames)}")
        return range(self.start, stop, self.step)

    def __str__(self) -> str:
        if self.listed is not None:  # (runs as ranges: a message quoting a list of 10,000 frames stays short)
            runs: list[list[int]] = []
            for i in self.listed:
                if runs and i == runs[-1][1] + 1:
                    runs[-1][1] = i
                else:
                    runs.append([i, i])
            return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
        every = f"/{self.step}" if self.step > 1 else ""
        if self.start == 0 and self.stop is None:
            return f"all{every}"
        if self.stop is None:
            return f"{self.start}-end{every}"
        if self.stop <= self.start + self.step:  # (one frame: a step says nothing)
            return str(self.start)
        return f"{self.start}-{self.stop - 1}{every}"


# (ASCII digits: Python's \d also takes other scripts' digits, which no one types for a frame.)
_SELECTION = re.compile(r"^\s*(?:(?P<all>all)|(?P<a>[0-9]+)(?:\s*-\s*(?P<b>[0-9]+|end))?)"
                        r"\s*(?:/\s*(?P<step>[0-9]+)\s*)?$", re.IGNORECASE)


def parse_frame_selection(text: str) -> FrameSelection:
    """Parse a frame choice: ``"all"``, ``"N"``, ``"A-B"`` (0-based, inclusive of B) or
    ``"A-end"`` (from A to the last frame), each of which may end in ``/S``, every S-th frame
    from the first (``"all/10"``: frames 0, 10, 20, ...; ``"5-50/5"``: 5, 10, ..., 50), as a
    cron field reads a step; or a list of frames and ranges, ``"0,5,9"`` or ``"0-4,10,20-40/10"``
    (as a cron field lists them: up to :data:`MAX_LISTED_FRAMES` frames, neither ``all`` nor
    ``end`` in it); what ``str`` of a :class:`FrameSelection` gives.

    Raises ``ValueError`` for anything else (negative numbers, B < A, a step of 0, empty text).
    """
    if "," in (text or ""):
        return _parse_frame_list(text)
    match = _SELECTION.match(text or "")
    if match is None:
        raise ValueError(f"frame selection must be 'all', 'N', 'A-B', 'A-end' (0-based), each optionally with "
                         f"'/S' for every S-th frame, or a list such as '0,5,9', got {text!r}")
    step = int(match.group("step")) if match.group("step") is not None else 1
    if step < 1:
        raise ValueError(f"frame selection {text!r} steps by 0 frames: a step is 1 or more")
    if match.group("all"):
        return FrameSelection(step=step)
    first = int(match.group("a"))
    if (match.group("b") or "").lower() == "end":
        return FrameSelection(first, None, step)
    last = int(match.group("b")) if match.group("b") is not None else first
    if last < first:
        raise ValueError(f"frame range {text!r} ends before it starts")
    if last - first < step:  # one frame: the same choice as 'N', which it prints as
        return FrameSelection(first, first + 1)
    return FrameSelection(first, last + 1, step)


def _parse_frame_list(text: str) -> FrameSelection:
    listed: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            raise ValueError(f"frame list {text!r} has an empty item: list frames as '0,5,9'")
        try:
            chosen = parse_frame_selection(part)
        except ValueError:
            raise ValueError(f"frame list {text!r}: {part.strip()!r} is not a frame 'N' or a range 'A-B' (or "
                             "'A-B/S')") from None
        if chosen.stop is None:  # ('all' or 'A-end': no list can hold every frame to come)
            raise ValueError(f"frame list {text!r}: {part.strip()!r} has no last frame; a list takes frames and "
                             "ranges 'A-B' only")
        if len(range(chosen.start, chosen.stop, chosen.step)) > MAX_LISTED_FRAMES:
            raise ValueError(f"a list names at most {MAX_LISTED_FRAMES:,} frames: for more, give a range, A-B/S")
        listed.update(range(chosen.start, chosen.stop, chosen.step))
    return FrameSelection(listed=tuple(listed))


def _whole_number(value: object) -> bool:
    """Whether ``value`` is an integer, Python's or numpy's (a bool is none)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def same_spacing(a: Spacing, b: Spacing, rel_tol: float = 1e-6) -> bool:
    """Whether two spacings agree to ``rel_tol`` (float noise from DS strings is ignored)."""
    return math.isclose(a[0], b[0], rel_tol=rel_tol) and math.isclose(a[1], b[1], rel_tol=rel_tol)


def spacings_agree(spacings) -> bool:
    """Whether ``spacings`` (each a spacing or None, for none known) are one calibration: every one
    known and all the same (:func:`same_spacing`). An unknown one beside a known one is not."""
    spacings = list(spacings)
    return all(spacing is not None for spacing in spacings) and all(
        same_spacing(spacings[0], other) for other in spacings[1:])
