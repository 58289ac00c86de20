"""Frame -> label mask -> measurement.

Pre-processing: crop to the ultrasound imaging region when the scan gives one, resample to
square pixels when the calibration says they are not (the network learnt anatomy on square
pixels), pad to a square (the anatomy keeps its aspect ratio; training frames are square),
resize to the network input, normalise as the model's metadata says. Post-processing: the
logits are resized back to the crop (and its own pixel grid) before the argmax, and the labels
are placed on the frame's pixel grid, where the measurement is made with the frame's physical
spacing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from ..io import UltrasoundFrame
from ..io.frames import MAX_FRAME_PIXELS
from ..io.greyscale import CHECKS_BRIGHTENED_BELOW, DARK_FRAME_LEVEL, brightened, brightest_echoes, on_8bit_scale
from ..io.sector import MAX_SECTOR_NARROWING, content_box, sector_narrowing
from ..measure import Measurement, measure_progress
from ..measure.progress import check_image_box, geometry_scale
from .preprocess import normalise_frame, pad_to_square, resize_image


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame's outcome: the label mask at the frame's size, its measurement, and timings (s:
    ``preprocess_s``, ``model_s``, ``measure_s``) for a frame segmented on its own
    (:meth:`~ipp_seg.inference.Predictor.predict_pixels`, ``predict_frame``); empty where frames share
    model calls (``predict``, ``predict_files``), whose time is the batch's, not one frame's.
    Compared by identity (``==`` on two results is ``is``): the masks are arrays."""

    frame: UltrasoundFrame
    labels: np.ndarray
    measurement: Measurement
    model: str
    timings: dict = field(default_factory=dict)
    head_confidence: float | None = None  # see head_confidence()
    ps_confidence: float | None = None  # see ps_confidence()
    model_sha256: str = ""  # of the model file that ran


class Segmented(NamedTuple):
    """A batch's label masks, the seconds spent pre-processing and in the model, and each
    frame's :func:`head_confidence`, :func:`head_extent` and :func:`ps_confidence`."""

    masks: list
    preprocess_s: float
    model_s: float
    head_confidence: list
    head_extent: list
    ps_confidence: list


#: Below this mean probability over the head it drew, the network is taken not to know the
#: frame. The default's twin gives 0.943 or more on every validation frame, also under gain,
#: zoom, sector and speckle shifts; noise, gradients and an MR image give 0.58-0.90 with every
#: shipped model, a non-obstetric ultrasound image 0.88-0.91 (benchmarks/RESULTS.md). 0.90
#: rather than higher: the shipped models trained on every frame dip to 0.91 on speckled real
#: frames.
MIN_HEAD_CONFIDENCE = 0.90


#: The same for the PS. The default's twin gives 0.931 or more on every validation frame, 0.911 or
#: more under the six robustness shifts, the shipped default 0.918 or more. With the validation
#: frames' symphysis blacked out, 102 of the 230 are still measured, on a PS the network invents,
#: and it scores 0.55-0.93: below 0.90 in 85 of them (STAR's twin: 115 of 137, and 1 real
#: validation frame at 0.86). benchmarks/head_confidence.py.
MIN_PS_CONFIDENCE = 0.90


#: No model's own floor lies below this (``scripts/ship_model.py`` writes none lower, and a card
#: giving one is no model card): a network whose mean probability for the class it draws is this
#: low (chance is 1/3 with three classes) is guessing, and its rows must say so.
LOWEST_CONFIDENCE_FLOOR = 0.6


#: A PS nearer than this share of the image (of its height for a band above or below, of its
#: width for one at a side) to a black band at the image's edge lies against it. On the 1,058
#: PSFHS frames no expert PS lies nearer than 0.055, nor the default's twin's on the 230
#: validation frames than 0.059; with the top or left 10-30 % of their expert PS blacked out
#: (a crop padded back to size), the twin's PS lies at 0.035 or less, and its AoP moved by a
#: median 8-16 deg where the top was cut (benchmarks/black_band_cuts.py, RESULTS.md).
MAX_PS_BLACK_BAND_GAP = 0.03
#: Another 2-D tissue region at least this share of the measured one's area is another view
#: (a dual view, side by side), which the network was not shown: ``other_view_not_measured``.
#: A Doppler strip or an M-mode trace is no tissue region, and a thumbnail is far smaller.
OTHER_VIEW_AREA_SHARE = 0.5
#: A frame whose imaged tissue is at full brightness (250 of 255 or more) in more than this
#: share is over-gained: ``frame_saturated``. In the 1,058 PSFHS frames the share is at most
#: 1.8 %; on 177 of them with the gain raised 2 times it passes 5 % in 97 %, and the network's
#: PS, which it finds by brightness, swells and moves: the AoP by a median 1.8 deg, 6.1 at the
#: 90th percentile (2.9 and 9.8 at 2.5 times; benchmarks/gain_saturation.py).
FRAME_SATURATED_SHARE = 0.05
#: Pixels drawn in a colour of their own (:attr:`~ipp_seg.io.UltrasoundFrame.colour_marks`)
#: over the PS (within :data:`MARKS_NEAR_SHARE` of the frame's shorter side of it) or on the
#: head's outline (as near to it, either side), from this many on: ``marks_over_anatomy``. A
#: sonographer's yellow calipers and dotted lines drawn on 24 validation frames had 227-383
#: such pixels there; no PSFHS frame has any (they are grey), and a tinted palette gives none.
MIN_MARKS_OVER_ANATOMY = 10
MARKS_NEAR_SHARE = 0.02
#: The image the network is shown (:func:`segmented_box`) is this many pixels or more on its shorter
#: side, or ``frame_small``: the network sees it enlarged to its 256-pixel input, and the outlines
#: of so few pixels swing the angle. The validation frames of the default's twin scaled down to 64
#: pixels read their AoP a median 2.7 deg from the full frame's, 8.4 at the 90th percentile, 7 of 130
#: unflagged more than 10 deg off (40 pixels: 4.1, 14.8 and 16); at 96 pixels 1.7, 4.6 and none
#: (a clinical safety pass: thumbnails measured without a word; benchmarks/small_frames.py).
MIN_FRAME_SIDE_MEASURED = 96
#: A head drawn where the frame shows no skull (:func:`skull_echo`): its outline dark against the
#: frame (the brightest echo within 4 pixels of each point, at the outline's 75th percentile,
#: below this share of the 99th percentile of the frame's echoes) and no brighter than the head's
#: inside (below :data:`MIN_SKULL_RIM_CONTRAST` times the same of its core): ``fh_not_seen``.
#: Both, so that a darker display curve, which dims a faint skull against the frame but not against
#: the head's inside, does not fail a real frame (a QA pass: the echo alone, at 0.35, failed 11 of
#: 300 narrow-sector frames at gamma 1.3-1.5). No PSFHS expert head meets both, at gamma 0.7 to
#: 1.5 (at 2.0, one: 04334, whose skull is faint), nor the default's twin's on its 230 validation
#: frames (gamma 1 and 1.5). With the tissue below the PS replaced by dark speckle (a head out of
#: view, behind fluid: the networks drew a head anyway, sure of it, and the frame got an AoP and
#: an HSD, status ok; a clinical safety pass), 215 of those 230 fail; with brighter speckle (mean
#: 15 of 255 and more) none, nor a head painted out with the tissue around it
#: (benchmarks/skull_echo.py).
MIN_SKULL_ECHO = 0.25
MIN_SKULL_RIM_CONTRAST = 1.5
_SKULL_ECHO_REACH_PX = 4
_SKULL_ECHO_CLEAR_OF_PS_PX = 10
_SKULL_ECHO_MIN_POINTS = 20
_SKULL_CORE_DEPTH_PX = 12
_SKULL_CORE_MIN_PX = 50
_SATURATED_LEVEL = 250
_TISSUE_LEVEL = 8  # above the black of the background and the sector's margin
_BLACK_BAND_PX = 2  # a side of the content box this far from the image's edge has a black band beyond it


def marks_over_anatomy(labels: np.ndarray, marks: np.ndarray | None, ps_label: int = 1, fh_label: int = 2) -> int:
    """How many of a frame's colour ``marks`` (an (H, W) bool mask, or None) lie over or near the
    PS that ``labels`` draws, or along the head's outline: the lines, crosses and text a
    scanner draws in colour, which the network reads as grey tissue. 0 without marks."""
    if marks is None:
        return 0
    radius = max(2, round(MARKS_NEAR_SHARE * min(labels.shape)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    near = cv2.dilate((labels == ps_label).astype(np.uint8), disc)
    head = (labels == fh_label).astype(np.uint8)
    near |= cv2.dilate(head, disc) & (1 - cv2.erode(head, disc))
    return int(np.count_nonzero(marks & near.astype(bool)))


def saturated_share(image: np.ndarray) -> float | None:
    """The share of an image's tissue (grey above 8 of 255) at full brightness (250 or more), 0-1.
    A float image on the 0-1 scale is read as 0-255; None for an image without tissue, or on
    another scale. Rows and columns nearly all white (a screen capture's menu bar, a border) are
    no tissue: over-gained echoes are speckle, never a full line."""
    image = on_8bit_scale(image)
    if image is None:
        return None
    saturated = image >= _SATURATED_LEVEL
    bars = (saturated.mean(axis=1) > 0.9)[:, None] | (saturated.mean(axis=0) > 0.9)[None, :]
    tissue = (image > _TISSUE_LEVEL) & ~bars
    count = int(np.count_nonzero(tissue))
    return None if count == 0 else int(np.count_nonzero(saturated & tissue)) / count


class SkullEcho(NamedTuple):
    """How bright a drawn head's outline is (:func:`skull_echo`): against the frame's echoes
    (``against_frame``) and against the head's own inside (``against_inside``)."""

    against_frame: float
    against_inside: float


def skull_echo(head: np.ndarray, ps: np.ndarray, image: np.ndarray) -> SkullEcho | None:
    """How bright the frame is along the outline of a drawn head (boolean masks ``head`` and
    ``ps`` of the greyscale ``image``'s shape): at each point of the outline of its largest part,
    the brightest pixel within 4 pixels, and of those the 75th percentile; as a share of the 99th
    percentile of the image's echoes (its pixels neither black nor white: white text burnt into
    a dark frame is no echo), so that the gain does not count, and as a multiple of the same
    taken over the head's core (12 pixels inside its outline; 1 grey level at least). A skull is
    an echo along much of the outline, brighter than the brain inside it; a head drawn over dark
    fluid or a blank area has neither. Points within 2 pixels of the image's edges or 10 of the PS
    (whose own echo is bright) are left out; None where fewer than 20 remain, the head has no core
    of 50 pixels, or there is no head or no echo at all."""
    drawn = head.astype(np.uint8)
    grey = on_8bit_scale(image)
    if grey is None:  # (another scale: its values as they are, none taken for white marks)
        grey, white = image.astype(np.float32), np.inf
    else:
        white = _SATURATED_LEVEL
    tissue = grey[(grey > 0) & (grey < white)]
    if not drawn.any() or not tissue.size:
        return None
    outlines, _ = cv2.findContours(drawn, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(outlines, key=len)[:, 0, :]
    h, w = drawn.shape
    square = np.ones((3, 3), np.uint8)
    near_ps = cv2.dilate(ps.astype(np.uint8), square, iterations=_SKULL_ECHO_CLEAR_OF_PS_PX) > 0
    core = cv2.erode(drawn, square, iterations=_SKULL_CORE_DEPTH_PX) > 0
    xs, ys = points[:, 0], points[:, 1]
    kept = (xs > 2) & (xs < w - 3) & (ys > 2) & (ys < h - 3)
    kept &= ~near_ps[ys, xs]
    if np.count_nonzero(kept) < _SKULL_ECHO_MIN_POINTS or np.count_nonzero(core) < _SKULL_CORE_MIN_PX:
        return None
    reach = 2 * _SKULL_ECHO_REACH_PX + 1
    nearby = cv2.dilate(grey.astype(np.float32), np.ones((reach, reach), np.uint8))
    outline = float(np.percentile(nearby[ys[kept], xs[kept]], 75))
    top = float(np.percentile(tissue, 99))
    if top <= 0:
        return None
    return SkullEcho(outline / top, outline / max(float(np.percentile(nearby[core], 75)), 1.0))


def skull_not_seen(echo: SkullEcho | None) -> bool:
    """Whether a head's :func:`skull_echo` shows no skull: dark against the frame and no brighter
    than its inside (:data:`MIN_SKULL_ECHO`, :data:`MIN_SKULL_RIM_CONTRAST`)."""
    return echo is not None and echo.against_frame < MIN_SKULL_ECHO and echo.against_inside < MIN_SKULL_RIM_CONTRAST


def ps_black_band_gap(ps: np.ndarray, image: np.ndarray) -> float | None:
    """How near a PS (boolean mask of ``image``'s shape) lies to a black band at an edge of the
    greyscale ``image`` (:func:`~ipp_seg.io.sector.content_box`): the smallest distance from the
    PS to a side of the image's content with such a band beyond it, as a share of the image's
    height (band above or below) or width (band at a side); negative where the PS reaches into
    the band. None without a PS, or where no side has a band (the image's content meets every
    edge of ``image``, whose own edges are the frame's to judge: ``*_at_frame_edge``)."""
    ys, xs = np.nonzero(ps)
    box = content_box(image)
    if not len(xs) or box is None:
        return None
    h, w = ps.shape
    x0, y0, x1, y1 = box
    gaps = [gap for banded, gap in (
        (y0 >= _BLACK_BAND_PX, (ys.min() - y0) / h), (h - y1 >= _BLACK_BAND_PX, (y1 - 1 - ys.max()) / h),
        (x0 >= _BLACK_BAND_PX, (xs.min() - x0) / w), (w - x1 >= _BLACK_BAND_PX, (x1 - 1 - xs.max()) / w),
    ) if banded]
    return float(min(gaps)) if gaps else None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=0, keepdims=True)
    probability = np.exp(shifted)
    probability /= probability.sum(axis=0, keepdims=True)
    return probability


def _mean_over_drawn(probability: np.ndarray, labels: np.ndarray, structure: int) -> float | None:
    drawn = labels == structure
    # None, not 0.0: a mean over no pixels is no value (a zero would read as a very unsure network).
    return float(probability[structure][drawn].mean()) if drawn.any() else None


def _disc_diameter_share(drawn: np.ndarray) -> float:
    return math.sqrt(4.0 * float(np.mean(drawn)) / math.pi)


def head_confidence(logits: np.ndarray, fh_class: int = 2) -> float | None:
    """Mean softmax probability of the fetal head over the pixels the network labels head, on
    its own grid ([K, h, w] logits); None when it labels none."""
    probability = _softmax(logits)
    return _mean_over_drawn(probability, probability.argmax(axis=0), fh_class)


def ps_confidence(logits: np.ndarray, ps_class: int = 1) -> float | None:
    """Mean softmax probability of the pubic symphysis over the pixels the network labels PS,
    on its own grid ([K, h, w] logits); None when it labels none."""
    probability = _softmax(logits)
    return _mean_over_drawn(probability, probability.argmax(axis=0), ps_class)


#: The head an expert drew spans at least this fraction of the network's view of the frame
#: (:func:`head_extent`) in 1,056 of the 1,058 PSFHS frames (minimum 0.29, 1st percentile 0.36,
#: median 0.54). Below it the anatomy is smaller in the frame than the models learnt and were
#: validated on: typically a screen capture or export with a margin, text or a second image
#: around the ultrasound image. The validation frames centred in a black margin at 0.6 and 0.5
#: of their size: the default's twin's median AoP error 6.9 and 9.8 deg against 5.1, with 45
#: and 218 of the 230 frames below this limit, none at full size (benchmarks/head_extent.py).
MIN_HEAD_EXTENT = 0.30


def head_extent(logits: np.ndarray, fh_class: int = 2) -> float:
    """Size of the fetal head the network labels, as the diameter of a disc of the same area
    divided by the side of the network's (square) input; 0.0 when it labels none."""
    return _disc_diameter_share(logits.argmax(axis=0) == fh_class)


def _frame_signals(logits: np.ndarray) -> tuple[float | None, float, float | None]:
    """:func:`head_confidence`, :func:`head_extent` and :func:`ps_confidence` of one frame's
    [K, h, w] logits from a single softmax and argmax (they run on every frame)."""
    probability = _softmax(logits)
    labels = probability.argmax(axis=0)
    return (_mean_over_drawn(probability, labels, 2), _disc_diameter_share(labels == 2),
            _mean_over_drawn(probability, labels, 1))


#: The smallest frame side, in pixels, that is segmented: below it a file holds a thumbnail, an
#: icon or a damaged header, not an ultrasound frame (the network sees 256 x 256).
MIN_FRAME_SIDE = 32
#: Fewer distinct grey values than this and a frame is a label mask (0/1/2, 0/128/255), a
#: blank or a binary image: nothing the network can read anatomy from.
MIN_GREY_LEVELS = 4


class FrameTooLongError(ValueError):
    """The part of a frame to segment is so long that, padded to a square for the network, it
    passes :data:`~ipp_seg.io.frames.MAX_FRAME_PIXELS` (a 40000 x 32 image of 1.3 million pixels
    had taken 19 GB): no ultrasound image to segment, the reason in its message."""


def not_segmentable_reason(pixels: np.ndarray) -> str | None:
    """Why a frame is not an ultrasound image the network can segment (too small, blank, a
    label mask such as an earlier run's), or ``None`` when it can be segmented (one too long
    to segment is told once its part to segment is known: :class:`FrameTooLongError`)."""
    rows, columns = pixels.shape[:2]
    if min(rows, columns) < MIN_FRAME_SIDE:
        return (f"the image is {columns} x {rows} pixels, too small to be an ultrasound frame "
                f"(at least {MIN_FRAME_SIDE} x {MIN_FRAME_SIDE} are needed)")
    if pixels.dtype == np.uint8 and pixels.ndim == 2:
        # A histogram in place: np.bincount would copy the frame into 8-byte integers first.
        levels = np.flatnonzero(cv2.calcHist([np.ascontiguousarray(pixels)], [0], None, [256], [0, 256]).ravel())
    else:
        levels = np.unique(pixels)
    if levels.size >= MIN_GREY_LEVELS:
        return None
    shown = ", ".join(f"{v:g}" for v in levels.astype(float))
    if levels.size == 1:
        return f"every pixel holds {shown}: a blank image, not an ultrasound frame"
    return (f"it holds only the grey values {shown}: a label mask or a binary image, not an ultrasound frame "
            "(to measure a mask, use ipp-seg measure)")


# Pixel aspect ratios within this of 1 are taken as square. Beyond MAX_PIXEL_ASPECT the
# calibration is not trusted to reshape the frame (a damaged header would blow it up): the
# measurement's own rule, geometry_scale, decides that.
_SQUARE_TOLERANCE = 0.02


@dataclass(frozen=True)
class _Placement:
    """Where the network input came from: crop box in the frame, its size once resampled to
    square pixels, the side of the padded square, and whether the crop was mirrored."""

    x0: int
    y0: int
    width: int
    height: int
    side: int
    square_width: int
    square_height: int
    mirrored: bool = False


#: A column or row of the frame whose values spread over at most this (on the 0-255 scale of
#: the frame's range) is a band of one level, not tissue (JPEG noise in a band stays below it).
BAND_SPREAD = 16


#: A band on every side of the image is a margin around it (:func:`trim_uniform_bands`) from this
#: share of its shorter side on: PSFHS frames' own bands reach 1.2 % of it at the top (3 pixels
#: of 256) and up to 27 % at a side, and a frame padded at its sides alone keeps its own top and
#: bottom rows (cutting them had moved the sample's AoP by 4 deg). Margins narrower than this
#: shrink the anatomy by less than a tenth, within what the models hold (head_extent.py).
MIN_MARGIN_SHARE = 0.05


#: Margins whose narrowest band across and narrowest band down are within this ratio of each other
#: are one margin all round (:func:`trim_uniform_bands`): a frame's own bands differ by a few pixels.
EVEN_MARGIN = 1.5


#: How much larger than the image's content (within its bands) the square left by an even margin on
#: every side may be and still be taken for the frame with its own margins (:func:`trim_uniform_bands`;
#: PSFHS frames' own bands take up to 9 % of their height).
OWN_MARGIN_ROOM = 1.1


def segmented_box(frame: UltrasoundFrame) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), pixels of the frame with x1 and y1 exclusive: the part of the frame the
    network is shown and measured in. The ultrasound imaging region where the scan gives one
    (the largest, the first of equal ones, as in a dual view), else the whole frame; in either,
    less the bands of one level around the image (:func:`trim_uniform_bands`)."""
    region = frame.imaging_region
    h, w = frame.pixels.shape
    box = None if region is None else check_image_box((region.x0, region.y0, region.x1, region.y1), (h, w))
    box = box if box is not None else (0, 0, w, h)  # (a degenerate region box: the whole frame)
    return trim_uniform_bands(frame.pixels, box, _crop_spacing(frame))


def trim_uniform_bands(pixels: np.ndarray, box: tuple[int, int, int, int],
                       spacing_mm: tuple[float, float] | None = None) -> tuple[int, int, int, int]:
    """``box`` (x0, y0, x1, y1) less the bands of one level around the image in it: a frame
    exported inside a margin (a screen capture, a crop padded back to its size) is shown to the
    network as the image alone, not shrunk into the square the bands widen. The models learnt
    square frames that reach at least one edge: PSFHS frames padded with bands read their AoP a
    median 4.1 deg away from the frame's own (bands at two sides), and centred in a margin on
    every side at 0.7 of the canvas, 6.3 deg (benchmarks/letterbox_bands.py, head_extent.py).

    In physical size (``spacing_mm`` x and y), where the narrowest band on every side is at least
    :data:`MIN_MARGIN_SHARE` of the shorter side (a margin all round; PSFHS frames have bands at
    up to three sides, never four, and at most 3 pixels at the top, so none of them changes):
    a margin of about one width all round (the narrowest bands across and down within
    :data:`EVEN_MARGIN` of each other: a capture centred on its screen, of any aspect) comes off
    whole, and the box left is trimmed again, where what is then left is no wider than the content
    by :data:`OWN_MARGIN_ROOM`; otherwise (a frame off-centre on a screen) the box is cut to a
    square around the image's content (within its bands), or to the square the narrowest band
    leaves where that holds the content with :data:`OWN_MARGIN_ROOM`, once that square is smaller
    than the shorter side by :data:`MIN_MARGIN_SHARE`. (A floor of 2 % was tried for the narrowest
    band, and failed a QA pass: a frame's own thin black ring, 12 pixels of 256, was cut, moving
    the angle a median 4.9 deg, and a capture with a line of text at its top lost its
    ``head_small_in_frame``.) Otherwise, the bands at the ends of the longer side
    go, as far as it is longer than the other. Each cut is shared evenly between the two ends of
    its side, as far as each end's bands go, or taken from the one end whose bands alone hold it
    (:func:`_cut_evenly`). (Two simpler rules failed QA
    passes: the narrowest band cut from every side, whatever the others, took the side bands of
    a frame letterboxed above and below, and the longer side's bands cut first left off-centre
    captures whole, up to 18 deg off.) A band is a column (or row) of one level, black, grey or
    white, within :data:`BAND_SPREAD` of it; a band holding text or a scale is no band, and the
    image is left as it is."""
    bands = _bands_around(pixels, box)
    if bands is None:
        return box
    (left, right), (top, bottom) = bands
    x0, y0, x1, y1 = box
    sx, sy = geometry_scale(spacing_mm)
    across, down = (x1 - x0) * sx, (y1 - y0) * sy
    shorter = min(across, down)
    content = max((x1 - x0 - left - right) * sx, (y1 - y0 - top - bottom) * sy)
    sideways, upright = min(left, right) * sx, min(top, bottom) * sy  # (mm, or pixels on an unknown spacing)
    margin = min(sideways, upright)
    if margin >= MIN_MARGIN_SHARE * shorter and max(sideways, upright) <= EVEN_MARGIN * margin:
        # A margin of about one width all round (a capture centred on its screen, of any aspect): it
        # comes off whole, then the longer side's bands as for any frame (a frame of its own aspect)...
        across_cut, down_cut = int(margin / sx + 1e-6), int(margin / sy + 1e-6)
        trimmed = trim_uniform_bands(pixels, (x0 + across_cut, y0 + down_cut, x1 - across_cut, y1 - down_cut),
                                     spacing_mm)
        # ...unless what is left is wider than the content by more than a frame's own margins: the
        # margin was even across and down at its narrowest only (a QA pass: 04720 read 26 deg off).
        if max((trimmed[2] - trimmed[0]) * sx, (trimmed[3] - trimmed[1]) * sy) <= OWN_MARGIN_ROOM * content:
            return trimmed
    # The margin's square where it holds the content with room for the frame's own margins; else (a
    # frame off-centre on a screen) the content's.
    side = max(content, shorter - 2 * margin) if shorter - 2 * margin <= OWN_MARGIN_ROOM * content else content
    if margin < MIN_MARGIN_SHARE * shorter or side > (1 - MIN_MARGIN_SHARE) * shorter:
        # No margin on every side to speak of (PSFHS frames' own top rows): the longer side's bands alone.
        if math.isclose(across, down, rel_tol=_SQUARE_TOLERANCE):
            return box
        side = shorter
    x0, x1 = _cut_evenly(x0, x1, side / sx, left, right)
    y0, y1 = _cut_evenly(y0, y1, side / sy, top, bottom)
    return x0, y0, x1, y1


def _cut_evenly(start: int, end: int, length: float, before: int, after: int) -> tuple[int, int]:
    """``start``-``end`` cut to ``length`` pixels (never longer than it is), the cut shared evenly
    between the two ends as far as each end's bands (``before``, ``after``) go: exact for bands
    added evenly. Where one end's bands alone hold the whole cut and the other's do not (bands
    added at one end), the cut is theirs: exact too, the other end's own margin kept (shared, a
    frame's own 22 rows below its sector had been cut with half the rows added above, and the
    image shown 22 rows lower). (Sharing out what is left of the bands instead, which keeps a
    frame's own margins where they were equal, measured worse on PSFHS frames, whose margins are
    not: benchmarks/letterbox_bands.py.)"""
    cut = min(max(0, int(end - start - length + 1e-6)), before + after)
    if (before >= cut) != (after >= cut):
        return (start + cut, end) if before >= cut else (start, end - cut)
    cut_before = min(before, (cut + 1) // 2)
    cut_after = min(after, cut - cut_before)
    cut_before = min(before, cut - cut_after)
    return start + cut_before, end - cut_after


def _bands_around(pixels: np.ndarray, box: tuple[int, int, int, int]
                  ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The bands of one level at the ends of ``box``'s columns and of its rows (:func:`_band_widths`),
    None where the box holds one level, or bands only."""
    x0, y0, x1, y1 = box
    crop = np.asarray(pixels[y0:y1, x0:x1])
    if crop.ndim > 2:  # colour: its brightest channel
        crop = np.fmax.reduce(crop, axis=-1)
    levels = _black_and_white(crop)
    if levels is None:  # one level throughout: nothing to tell bands from
        return None
    columns, rows = _band_widths(crop, 0, *levels), _band_widths(crop, 1, *levels)
    return None if columns is None or rows is None else (columns, rows)


def _band_widths(crop: np.ndarray, along: int, black: float, white: float) -> tuple[int, int] | None:
    """How many columns (``along`` 0) or rows (1) at each end of ``crop`` are bands of one level
    (:func:`trim_uniform_bands`); None where all are. Each line's spread leaves out its 2
    outermost pixels (a 1-pixel border line drawn around a capture crosses every column and
    row). NaN (outside the field of view) is passed over, and a line of NaN alone is a band."""
    inner = crop if crop.shape[along] <= 8 else crop[2:-2] if along == 0 else crop[:, 2:-2]
    spread = (np.fmax.reduce(inner, axis=along).astype(np.float64)
              - np.fmin.reduce(inner, axis=along).astype(np.float64))
    band = ~(spread > BAND_SPREAD / 255.0 * (white - black))
    image = np.flatnonzero(~band)
    if image.size == 0:
        return None
    return int(image[0]), int(band.size - 1 - image[-1])


def _black_and_white(pixels: np.ndarray) -> tuple[float, float] | None:
    """The frame's own finite extremes (a frame in dB, or with an offset, reads alike), None where
    it holds one level or none. Only a float frame can hold NaN or inf, and only it is copied to
    leave them out."""
    if np.issubdtype(pixels.dtype, np.floating):
        finite = pixels[np.isfinite(pixels)]
        if finite.size == 0:
            return None
        black, white = float(finite.min()), float(finite.max())
    else:
        black, white = float(pixels.min()), float(pixels.max())
    return (black, white) if white > black else None


#: How many outermost rows or columns at each side may be a line drawn around a capture.
BORDER_LINE_MOST = 6


def cover_border_lines(crop: np.ndarray, most: int = BORDER_LINE_MOST) -> np.ndarray:
    """``crop`` (H x W, any numeric dtype) with the lines drawn around it covered: where the
    ``most`` outermost rows (or columns) at a side hold lines of one level (within
    :data:`BAND_SPREAD` of the crop's range) brighter than its black, and no more such lines
    follow before the image, each takes the values of the row inward of the last. A white or
    grey border line of a screen capture is 1.6 % of a 256 x 256 frame's pixels: it raised the
    high percentile the input normalisation maps to white, and moved the AoP of validation
    frames so framed a median 1.3-4.5 deg (up to 108; ``benchmarks/border_lines.py``). Black
    lines (a frame's own margin) and lines with anything in them are left as they are, and
    ``crop`` itself is returned when nothing is covered."""
    level = np.asarray(crop)
    levels = None if min(level.shape) <= 2 * most + 2 else _black_and_white(level)
    if levels is None:
        return crop
    black, white = levels
    limit = BAND_SPREAD / 255.0 * (white - black)
    out = crop
    for axis in (0, 1):
        lines = level if axis == 0 else level.T
        for step in (1, -1):
            first = 0 if step == 1 else lines.shape[0] - 1
            drawn, depth = [], 0
            # Inward over the lines of one level (black ones, a frame's margin, passed over), as
            # far as a quarter of the frame: the bright ones among them are drawn.
            while depth < lines.shape[0] // 4:
                line = lines[first + step * depth]
                # (A line with NaN in it, outside a float frame's field of view, is none drawn.)
                if not np.isfinite(line).all() or not line.max() - line.min() <= limit:
                    break
                if np.fmin.reduce(line) > black + limit:
                    drawn.append(depth)
                depth += 1
            # A line at the edge, not a frame drawn wider than ``most`` or a bar further in.
            if drawn and drawn[-1] < most:
                if out is crop:
                    out = np.array(crop)
                target = out if axis == 0 else out.T
                target[[first + step * d for d in drawn]] = target[first + step * (drawn[-1] + 1)]
    return out


def square_pixel_size(width: int, height: int, spacing_mm: tuple[float, float] | None) -> tuple[int, int]:
    """(width, height) in pixels of a ``width`` x ``height`` image resampled to square pixels,
    the finer of the two spacings (mm per pixel, x and y) kept; unchanged when the spacing is
    unknown, square within 2 %, or more than :data:`MAX_PIXEL_ASPECT` to 1. The coarser is kept
    where the finer would make the square the network's input is cut from larger than
    :data:`~ipp_seg.io.frames.MAX_FRAME_PIXELS` (the input is 256 pixels a side either way; a
    large frame enlarged up to 4 times had taken gigabytes)."""
    sx, sy = geometry_scale(spacing_mm)  # (1, 1) when unknown or beyond MAX_PIXEL_ASPECT
    if max(sx, sy) / min(sx, sy) - 1.0 < _SQUARE_TOLERANCE:
        return width, height
    for kept in (min(sx, sy), max(sx, sy)):
        size = max(1, round(width * sx / kept)), max(1, round(height * sy / kept))
        if max(size) ** 2 <= MAX_FRAME_PIXELS:
            break
    return size


def _crop_spacing(frame: UltrasoundFrame) -> tuple[float, float] | None:
    region = frame.imaging_region
    if region is not None and region.spacing_mm is not None:
        return region.spacing_mm
    return frame.spacing_mm


def prepare_input(frame: UltrasoundFrame, input_size: tuple[int, int], in_channels: int,
                  normalisation: dict, mirrored: bool = False) -> tuple[np.ndarray, _Placement]:
    """Network input [C, H, W] float32 for one frame, and how to map the output back.
    ``mirrored``: the frame is displayed mirrored left-right (``--orientation mirrored``): its
    crop is mirrored back, so that the network sees the display it was trained and validated on."""
    x0, y0, x1, y1 = segmented_box(frame)
    crop = cover_border_lines(np.asarray(frame.pixels[y0:y1, x0:x1], dtype=np.float32))
    if mirrored:
        crop = np.ascontiguousarray(crop[:, ::-1])
    square_w, square_h = square_pixel_size(x1 - x0, y1 - y0, _crop_spacing(frame))
    side = max(square_w, square_h)
    if side * side > MAX_FRAME_PIXELS:  # (the part segmented: a wide capture's small image inside its bands is not)
        raise FrameTooLongError(
            f"the part of the image to segment is {x1 - x0} x {y1 - y0} pixels: the network is shown it padded to a "
            f"square of {side} x {side}, beyond the {MAX_FRAME_PIXELS // 1_000_000} million pixels ipp-seg takes; "
            "crop it to the ultrasound image, or make it smaller")
    if (square_w, square_h) != (x1 - x0, y1 - y0):
        crop = cv2.resize(crop, (square_w, square_h), interpolation=cv2.INTER_LINEAR)
    square = pad_to_square(crop)
    side = square.shape[0]
    size_h, size_w = input_size
    # The same padding and resizing as training (train.data.on_inference_grid, resize_image).
    x = normalise_frame(resize_image(square, (size_h, size_w)), normalisation)
    x = np.broadcast_to(x, (in_channels, size_h, size_w))
    return x, _Placement(x0, y0, x1 - x0, y1 - y0, side, square_w, square_h, mirrored)


def labels_from_logits(logits: np.ndarray, placement: _Placement, frame_shape: tuple[int, int]) -> np.ndarray:
    """[K, h, w] logits -> uint8 labels on the frame's grid (logits resized, then argmax)."""
    k = logits.shape[0]
    side = placement.side
    up = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (side, side), interpolation=cv2.INTER_LINEAR)
    up = up.reshape(side, side, k)[: placement.square_height, : placement.square_width]
    if (placement.square_height, placement.square_width) != (placement.height, placement.width):
        # Back from square pixels to the frame's own.
        up = cv2.resize(np.ascontiguousarray(up), (placement.width, placement.height), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(placement.height, placement.width, k)
    if placement.mirrored:  # back to the frame's own display
        up = up[:, ::-1]
    labels = np.zeros(frame_shape, dtype=np.uint8)
    labels[placement.y0:placement.y0 + placement.height, placement.x0:placement.x0 + placement.width] = \
        up.argmax(axis=-1).astype(np.uint8)
    return labels


def segment_frames(frames: list[UltrasoundFrame], segmenter, tta: bool = False, mirrored: bool = False) -> Segmented:
    """Label masks for a batch of frames, with timings and each frame's head confidence.

    With ``tta``, the logits of the frame and of its mirror image are averaged. ``mirrored``:
    the frames are displayed mirrored, and are segmented mirrored back (:func:`prepare_input`).
    """
    info = segmenter.info
    started = time.perf_counter()
    prepared = [prepare_input(f, info.input_size, info.in_channels, info.normalisation, mirrored) for f in frames]
    batch = np.stack([p[0] for p in prepared])
    prep_s = time.perf_counter() - started
    started = time.perf_counter()
    logits = segmenter.logits(batch)
    if tta:
        logits = (logits + segmenter.logits(batch[..., ::-1].copy())[..., ::-1]) / 2
    model_s = time.perf_counter() - started
    started = time.perf_counter()
    masks = [labels_from_logits(lg, p[1], f.pixels.shape) for lg, p, f in zip(logits, prepared, frames)]
    signals = [_frame_signals(lg) for lg in logits]
    confidence, extent, symphysis = ([frame_signals[k] for frame_signals in signals] for k in range(3))
    # Resizing the logits back and the argmax count as pre/post-processing, not model time.
    prep_s += time.perf_counter() - started
    return Segmented(masks, prep_s, model_s, confidence, extent, symphysis)


def predict_frame(frame: UltrasoundFrame, segmenter, *, method: str = "ellipse", orientation: str = "standard",
                  tta: bool = False) -> FrameResult:
    """Segment and measure one frame."""
    (labels,), prep_s, model_s, (confidence,), (extent,), (symphysis,) = segment_frames(
        [frame], segmenter, tta, mirrored=orientation == "mirrored")
    started = time.perf_counter()
    measurement = measure_frame(labels, frame, method=method, orientation=orientation, head_confidence=confidence,
                                head_extent=extent, ps_confidence=symphysis,
                                confidence_floors=segmenter.info.confidence_floors)
    return FrameResult(frame, labels, measurement, segmenter.info.name,
                       {"preprocess_s": prep_s, "model_s": model_s, "measure_s": time.perf_counter() - started},
                       confidence, symphysis, segmenter.info.model_sha256)


def _unrecognised(labels: np.ndarray, fh_label: int, ps_drawn: bool, head_confidence: float | None,
                  ps_confidence: float | None, min_head: float, min_ps: float) -> bool:
    """Whether the network drew neither structure it is sure of: each one either not drawn or
    drawn with its confidence below its floor. (A report's screen capture had its text drawn as
    an unsure head beside no PS, and had been failed as ``ps_missing`` only, its SEG labelling
    the text a head.)"""
    head_sure = bool((labels == fh_label).any()) and not (head_confidence is not None and head_confidence < min_head)
    ps_sure = ps_drawn and not (ps_confidence is not None and ps_confidence < min_ps)
    return not (head_sure or ps_sure)


def measure_frame(labels: np.ndarray, frame: UltrasoundFrame, *, method: str, orientation: str,
                  ps_label: int = 1, fh_label: int = 2, head_confidence: float | None = None,
                  head_extent: float | None = None, ps_confidence: float | None = None,
                  segmented_here: bool = True, confidence_floors: tuple[float, float] | None = None
                  ) -> Measurement:
    """Measure with the spacing of the imaging region that holds the anatomy (the PS); a
    ``head_confidence`` below :data:`MIN_HEAD_CONFIDENCE` adds the warning ``low_confidence``,
    a (non-zero) ``head_extent`` below :data:`MIN_HEAD_EXTENT` the warning ``head_small_in_frame``,
    a ``ps_confidence`` (None where no PS was drawn) below :data:`MIN_PS_CONFIDENCE` the warning ``ps_low_confidence``,
    both structures below their floors or not drawn fail it (``anatomy_unrecognised``, see
    :func:`_unrecognised`),
    a frame whose imaged sector narrows with depth (:func:`ipp_seg.io.sector.sector_narrowing`
    above :data:`~ipp_seg.io.sector.MAX_SECTOR_NARROWING`) the warning ``sector_upside_down``,
    a PS against a black band at the image's edge (:func:`ps_black_band_gap` below
    :data:`MAX_PS_BLACK_BAND_GAP`, within the part of the frame the network was shown) the
    warning ``ps_at_black_band``, and a frame with another view beside the one the network was
    shown (:func:`other_views`) the warning ``other_view_not_measured``, and a frame whose
    tissue is saturated over :data:`FRAME_SATURATED_SHARE` (:func:`saturated_share`) the warning
    ``frame_saturated``, a head drawn where the frame shows no skull along its outline
    (:func:`skull_not_seen`) fails it (``fh_not_seen``), and a frame
    with colour marks over its anatomy (:func:`marks_over_anatomy` from
    :data:`MIN_MARKS_OVER_ANATOMY` on) the warning ``marks_over_anatomy``; ``segmented_here``
    False (a mask drawn elsewhere, ``measure``: it may be of either view, and an expert's
    outline neither swells with the gain nor takes a caliper line for tissue) leaves those three
    out, ``fh_not_seen`` (an expert draws no head where none is shown), and
    ``anatomy_unrecognised``, which a structure missing from an expert's mask does not mean.
    ``confidence_floors``: the model's own (head, PS) floors from its card, in place of
    :data:`MIN_HEAD_CONFIDENCE` and :data:`MIN_PS_CONFIDENCE`."""
    min_head, min_ps = confidence_floors or (MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE)
    ys, xs = np.nonzero(labels == ps_label)
    region = frame.imaging_region
    if len(xs):
        spacing, source = frame.calibration_at(float(xs.mean()), float(ys.mean()))
    elif region is not None and region.spacing_mm is not None:  # no PS: the region the network was shown
        spacing, source = region.spacing_mm, "ultrasound_region"
    else:
        spacing, source = frame.spacing_mm, frame.spacing_source
    if (spacing is not None and len(frame.regions) > 1  # (the mask made only where regions could disagree)
            and not frame.calibrated_alike_over((labels == ps_label) | (labels == fh_label))):
        spacing, source = None, None  # (a zoom box of its own calibration over part of the anatomy)
    # The network saw the imaging region only: its edges are the image's (a zoom cuts there).
    x0, y0, x1, y1 = segmented_box(frame)
    measurement = measure_progress(labels, spacing, method=method, orientation=orientation,
                                   ps_label=ps_label, fh_label=fh_label, spacing_source=source,
                                   image_box=(x0, y0, x1, y1))
    marks = measurement.landmarks
    if spacing is not None and not frame.calibrated_as_at(
            (marks.ps_inferior_end, marks.hsd_point, marks.shortest_point, marks.fh_tangent_point), spacing):
        # A small box of its own calibration over the points the distances run between (1 % of the
        # anatomy or less, which the check above lets pass) had kept the image's millimetres.
        measurement = measure_progress(labels, None, method=method, orientation=orientation, ps_label=ps_label,
                                       fh_label=fh_label, image_box=(x0, y0, x1, y1))
    if head_confidence is not None and head_confidence < min_head:
        measurement = measurement.with_warning("low_confidence")  # a failed one stays failed, and says why too
    if head_extent and head_extent < MIN_HEAD_EXTENT:  # no head at all is fh_missing's to say
        measurement = measurement.with_warning("head_small_in_frame")
    if ps_confidence is not None and ps_confidence < min_ps:  # no PS at all (None) is ps_missing's
        measurement = measurement.with_warning("ps_low_confidence")
    if segmented_here and _unrecognised(labels, fh_label, len(xs) > 0, head_confidence, ps_confidence,
                                        min_head, min_ps):
        # Unsure of both (never on a PSFHS frame): a photograph, another view, a report's screen
        # capture. No angle to report, and its cause named first, before what its masks' shapes say.
        measurement = measurement.with_failure("anatomy_unrecognised")
    # A dark frame's black bands and sector are read as a frame of PSFHS's brightness shows them:
    # their thresholds are grey levels, and at a tenth of the gain dim tissue had read as a band.
    echoes = frame_echoes(frame)
    dark = echoes is not None and echoes < DARK_FRAME_LEVEL
    checked = brightened(frame.pixels, echoes) if echoes is not None and echoes < CHECKS_BRIGHTENED_BELOW \
        else frame.pixels
    narrowing = sector_narrowing(checked)  # the frame's own sign of its display, whatever the network drew
    if narrowing is not None and narrowing > MAX_SECTOR_NARROWING:
        measurement = measurement.with_warning("sector_upside_down")
    band_gap = ps_black_band_gap(labels[y0:y1, x0:x1] == ps_label, checked[y0:y1, x0:x1])
    if band_gap is not None and band_gap < MAX_PS_BLACK_BAND_GAP:
        measurement = measurement.with_warning("ps_at_black_band")
    if segmented_here and min(x1 - x0, y1 - y0) < MIN_FRAME_SIDE_MEASURED:
        measurement = measurement.with_warning("frame_small")
    if segmented_here and "anatomy_unrecognised" not in measurement.reasons:
        if skull_not_seen(skull_echo(labels[y0:y1, x0:x1] == fh_label, labels[y0:y1, x0:x1] == ps_label,
                                     frame.pixels[y0:y1, x0:x1])):
            # A head drawn where the frame shows no skull: an angle to it measures nothing.
            measurement = measurement.with_failure("fh_not_seen")
    if segmented_here and other_views(frame):
        measurement = measurement.with_warning("other_view_not_measured")
    if segmented_here and marks_over_anatomy(labels, frame.colour_marks, ps_label, fh_label) >= MIN_MARKS_OVER_ANATOMY:
        measurement = measurement.with_warning("marks_over_anatomy")
    # (On a dark frame what is white is text or a banner, not tissue a gain saturated.)
    saturated = saturated_share(frame.pixels[y0:y1, x0:x1]) if segmented_here and not dark else None
    if saturated is not None and saturated > FRAME_SATURATED_SHARE:  # the network's masks alone: an expert's stand
        measurement = measurement.with_warning("frame_saturated")
    if dark:  # (an expert's outline measured on it too: the frame is as dark to check it against)
        measurement = measurement.with_warning("frame_dark")
    return measurement


def frame_echoes(frame: UltrasoundFrame) -> float | None:
    """The brightest echoes (:func:`~ipp_seg.io.greyscale.brightest_echoes`, 0-255) of the part
    of ``frame`` the network was shown (:func:`segmented_box`): what ``frame_dark`` is judged by,
    and what its overlay is brightened by."""
    x0, y0, x1, y1 = segmented_box(frame)
    return brightest_echoes(frame.pixels[y0:y1, x0:x1])


def other_views(frame: UltrasoundFrame) -> list:
    """The frame's 2-D tissue regions that are views of their own beside the one segmented
    (:attr:`~ipp_seg.io.UltrasoundFrame.imaging_region`): apart from it (a box listed twice, or
    one inside it such as a colour-flow box, is part of the same view) and at least
    :data:`OTHER_VIEW_AREA_SHARE` of its area."""
    region = frame.imaging_region
    if region is None:
        return []
    return [other for other in frame.regions
            if other.area >= OTHER_VIEW_AREA_SHARE * region.area
            and (other.x1 <= region.x0 or other.x0 >= region.x1 or other.y1 <= region.y0 or other.y0 >= region.y1)]
