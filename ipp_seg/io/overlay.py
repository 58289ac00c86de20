"""Overlay picture of one measured frame, for a clinician to check a result at a glance.

:func:`render_overlay` draws, on the greyscale frame, the pubic symphysis (PS) and fetal head
(FH) masks in translucent colour, the PS axis with its inferior end marked, the tangent from
the inferior end to the head, the angle of progression (AoP) arc with its value, the
head-symphysis distance (HSD) segment with its value, and, in a text panel under the frame,
the values and the measurement's status and reason codes. Drawing is OpenCV only. Write the
result with :func:`ipp_seg.io.write_overlay_png`.
"""

from __future__ import annotations

import functools
import logging
import math

import cv2
import numpy as np

from ..measure.progress import geometry_scale
from ..measure.result import ANGLE_IN_DOUBT, HSD_IN_DOUBT, REASON_TITLES, REASONS, Landmarks, Measurement
from .greyscale import BRIGHTENED_LEVEL, brightened, brightest_echoes, on_8bit_scale

__all__ = ["FH_COLOUR", "MIN_RENDER_SIDE_PX", "PS_COLOUR", "drawn_size", "overlay_scale", "overlay_title",
           "render_overlay"]

logger = logging.getLogger(__name__)

# Frames whose longer side is below this are enlarged by an integer factor so that the
# Hershey text stays legible.
MIN_RENDER_SIDE_PX = 512

# RGB. Orange and blue stay distinct for the common red-green colour-vision deficiencies.
PS_COLOUR = (255, 140, 0)
FH_COLOUR = (40, 150, 255)
_AXIS_COLOUR = (255, 235, 0)  # PS axis, tangent and AoP arc: one colour, one construction
_HSD_COLOUR = (0, 230, 120)
_TEXT_COLOUR = (255, 255, 255)
# The red light enough to read on the dark panel with protanopia too (contrast 5.6:1, simulated).
_STATUS_COLOURS = {"ok": (90, 220, 90), "warning": (255, 190, 0), "failed": (255, 120, 120)}
_EDGE_COLOUR = (0, 0, 0)  # under every line: a yellow or green line on bright bone had had 1.0-1.4:1
_PANEL_COLOUR = (24, 24, 24)
#: The panel's last line of text: what made the overlay is research software.
RESEARCH_USE_SAID = "ipp-seg: research software, not for diagnosis"
_MASK_ALPHA = 0.35

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # cv2 fixed-point bits: landmarks are drawn at sub-pixel positions
_ONE = 1 << _SHIFT


def overlay_scale(shape: tuple[int, ...]) -> int:
    """Integer enlargement :func:`render_overlay` applies to a frame of this (H, W) shape."""
    longest = max(int(shape[0]), int(shape[1]))
    return max(1, math.ceil(MIN_RENDER_SIDE_PX / max(longest, 1)))


def drawn_size(shape: tuple[int, ...], spacing_mm: tuple[float, float] | None) -> tuple[int, int]:
    """(width, height) in pixels of the frame as :func:`render_overlay` draws it: enlarged by
    :func:`overlay_scale`, and stretched along one axis to square physical pixels when the
    spacing (x, y mm per pixel) says they are not, so that angles and right angles look as
    they were measured."""
    height, width = int(shape[0]), int(shape[1])
    kx = ky = float(overlay_scale(shape))
    # The measurement's geometry: (1, 1), the stored grid, for a spacing unknown or more than
    # MAX_PIXEL_ASPECT to 1 (a damaged calibration, by which nothing is reshaped).
    sx, sy = geometry_scale(spacing_mm)
    if not math.isclose(sx, sy, rel_tol=0.01):
        kx, ky = kx * sx / min(sx, sy), ky * sy / min(sx, sy)
    return max(1, round(width * kx)), max(1, round(height * ky))


def overlay_title(name: str, frame_index: int, n_frames: int, dicom_frame_number: int | None = None,
                  frame_time_ms: float | None = None) -> str:
    """The first line of an overlay's text panel: the scan's name, and its frame in a cine,
    counted from 0 as everywhere else (tables, CSV, ``_f0003`` file names): "frame 2 of 0-2",
    never "frame 2 of 3", which reads as the second of three. A DICOM cine's frame also gets
    the 1-based number a PACS viewer, the SEG and the SR give it: "(DICOM frame 3)", and its
    time after the cine's first frame where the header gives one (``frame_time_ms``), in
    seconds: "at 0.080 s"."""
    if n_frames <= 1:
        return name
    dicom = f" (DICOM frame {dicom_frame_number})" if dicom_frame_number is not None else ""
    at = f" at {_seconds(frame_time_ms)} s" if frame_time_ms is not None else ""
    return f"{name}  frame {frame_index} of 0-{n_frames - 1}{dicom}{at}"


def _seconds(ms: float) -> str:
    """A time in ms as seconds, with the decimals it has: at least 3 (``0.080``), at most 6, the
    0.001 ms it is kept to (``0.0667``, ``0.0001``): frames 0.1 ms apart had all read "at 0.000 s"."""
    whole, _, part = f"{ms / 1000:.6f}".partition(".")
    return f"{whole}.{part.rstrip('0').ljust(3, '0')}"


def burned_in_text_shown(frame) -> str | None:
    """What to say of an overlay of ``frame`` (an UltrasoundFrame) whose file says text is burnt
    into its pixels (Burned In Annotation YES); None for any other. Without an ultrasound region
    nothing around the image is blacked out (:func:`imaged_pixels`); with one, the banner around
    it is, but text written inside it (a name over the image, as some exports place it) is not."""
    if not frame.provenance.burned_in_text:
        return None
    if not frame.regions:
        return ("the file says text is burnt into its pixels (Burned In Annotation YES) and declares no ultrasound "
                "region, so its overlay shows the whole frame, that text (a patient's name, often) included")
    return ("the file says text is burnt into its pixels (Burned In Annotation YES): its overlay blacks out what lies "
            "outside the ultrasound regions, but text inside them (a patient's name, on some exports) shows; check "
            "the overlays before sharing them")


def imaged_pixels(pixels: np.ndarray, regions) -> np.ndarray:
    """``pixels`` with everything outside the frame's 2-D tissue regions (DICOM ultrasound
    regions, ``UltrasoundFrame.regions``) black: the banner, where a scanner burns in the
    patient's name, and the other text around the image stay out of an overlay, a PNG that no
    DICOM de-identification sees. Unchanged for a frame without regions."""
    if not regions:
        return pixels
    inside = np.zeros(pixels.shape[:2], bool)
    for r in regions:
        inside[max(r.y0, 0):max(r.y1, 0), max(r.x0, 0):max(r.x1, 0)] = True
    shown = np.zeros_like(pixels)
    shown[inside] = pixels[inside]
    return shown


def render_overlay(
    pixels: np.ndarray,
    label_mask: np.ndarray,
    measurement: Measurement,
    *,
    title: str | None = None,
    tta: bool = False,
    model: str | None = None,
    echoes: float | None = None,
) -> np.ndarray:
    """Draw a measurement on its frame; returns an RGB uint8 image.

    Args:
        pixels: (H, W) greyscale frame, uint8 or float on the 0-255 scale (values outside are
            clipped), a float frame on the 0-1 scale (shown on 0-255) or on a scale of its own
            (shown from its lowest value to its highest), or (H, W, 3) RGB uint8.
        label_mask: (H, W) labels, 1 = PS and 2 = FH (other values are not drawn), on the same
            pixel grid as ``pixels``.
        measurement: the result of :func:`ipp_seg.measure.measure_progress` on ``label_mask``;
            its landmarks are (x, y) pixel coordinates of that grid. Whatever landmarks and
            values it holds are drawn, but a failed measurement shows its masks and status alone.
        title: optional first line of the text panel (e.g. :func:`overlay_title`).
        tta: whether the masks came from the frame averaged with its mirror image (said in the
            panel, with the method and orientation the measurement records).
        model: the model that drew the masks, named in the panel (models read the same frame
            differently: a saved overlay says whose reading it shows).

    A greyscale frame whose measurement carries ``frame_dark`` is shown brightened
    (:func:`~ipp_seg.io.greyscale.brightened`) by its brightest ``echoes`` (those the warning was
    judged by, :func:`ipp_seg.inference.pipeline.frame_echoes`; read from ``pixels`` where None),
    and the panel says by how much: an under-gained frame's outlines could not be checked against it.

    Returns:
        (h + P, w, 3) uint8 RGB, ``(w, h) = drawn_size((H, W), measurement.spacing_mm)``: the
        frame enlarged by the integer factor ``s = overlay_scale((H, W))`` (1 unless the longer
        side is under :data:`MIN_RENDER_SIDE_PX` pixels) and, for pixels that are not square,
        stretched to square ones; pixel (x, y) of the frame is centred on
        ``((x + 0.5) * w / W - 0.5, (y + 0.5) * h / H - 0.5)``. A text panel of P rows is
        appended below, so the returned image is larger than the frame.

    Raises:
        ValueError: when the arrays have unusable shapes or do not match.
    """
    brightened_by = None
    if "frame_dark" in measurement.reasons and np.ndim(pixels) == 2:
        echoes = brightest_echoes(np.asarray(pixels)) if echoes is None else echoes
        shown = brightened(np.asarray(pixels), echoes) if echoes is not None else pixels
        if shown is not pixels:
            pixels, brightened_by = shown, BRIGHTENED_LEVEL / echoes
    frame = _as_rgb(pixels)
    mask = np.asarray(label_mask)
    if mask.ndim != 2 or mask.shape != frame.shape[:2]:
        raise ValueError(f"label mask shape {mask.shape} does not match the frame {frame.shape[:2]}")
    width, height = drawn_size(mask.shape, measurement.spacing_mm)
    # Canvas pixels per frame pixel, along x and y.
    k = np.array([width / mask.shape[1], height / mask.shape[0]], dtype=np.float64)
    if (height, width) != mask.shape:
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    canvas = frame.copy()
    style = _Style(canvas.shape[1])

    for label, colour in ((1, PS_COLOUR), (2, FH_COLOUR)):
        _tint(canvas, mask == label, colour, style)
    _draw_geometry(canvas, measurement, k, style)
    border = _border_colour(measurement)
    if border is not None:
        h, w = canvas.shape[:2]
        # Wide enough to see on a 2000-px frame, and doubled where the measurement failed: red and amber
        # look alike to a red-green colour-blind reader and in greyscale print (an overlay reviewer's pass).
        width = max(3, 2 * style.line)
        cv2.rectangle(canvas, (0, 0), (w - 1, h - 1), border, width)
        if measurement.status == "failed":
            inset = 3 * width
            cv2.rectangle(canvas, (inset, inset), (w - 1 - inset, h - 1 - inset), border, width)
    panel = _text_panel(canvas.shape[1], measurement, title, style, tta, model, brightened_by)
    return np.ascontiguousarray(np.vstack([canvas, panel]))


def _border_colour(m: Measurement) -> tuple[int, int, int] | None:
    """The frame drawn around the image, flagging numbers to check: the failed colour for a
    failed measurement, the warning colour where a warning puts the AoP or HSD in doubt, none
    otherwise. A warning that doubts neither (``spacing_unknown``, the commonest) gets none: a
    border on every uncalibrated PNG had told a doubtful frame from a sound one no longer."""
    if m.status == "failed":
        return _STATUS_COLOURS["failed"]
    if m.status != "ok" and (m.aop_doubtful or m.hsd_doubtful):
        return _STATUS_COLOURS["warning"]
    return None


class _Style:
    """Line widths and font sizes proportional to the rendered width (pixels)."""

    def __init__(self, width: int) -> None:
        self.font_scale = float(np.clip(width / 900.0, 0.45, 2.0))
        self.text_thickness = max(1, round(self.font_scale * 1.6))
        self.line = max(1, round(width / 300.0))
        self.thin = max(1, self.line // 2)
        self.marker = max(3, round(width / 110.0))


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    image = np.asarray(pixels)
    if image.ndim == 3 and image.shape[2] == 3:
        rgb = image
    elif image.ndim == 2:
        rgb = None
    else:
        raise ValueError(f"pixels must be (H, W) greyscale or (H, W, 3) RGB, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("pixels are empty")
    if image.dtype != np.uint8:
        # Frames deeper than 8 bits arrive on the 0-255 scale as float (see UltrasoundFrame); float files
        # as they stored them: on 0-1 (shown black, a QA pass found), or on a scale of their own.
        grey = np.nan_to_num(image.astype(np.float32))
        shown = on_8bit_scale(grey)
        if shown is None:
            low, high = float(grey.min()), float(grey.max())
            shown = (grey - low) * np.float32(255.0 / (high - low)) if high > low else np.zeros_like(grey)
        image = np.clip(shown, 0.0, 255.0).round().astype(np.uint8)
    if rgb is None:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image)


def _tint(canvas: np.ndarray, region: np.ndarray, colour: tuple[int, int, int], style: _Style) -> None:
    if not region.any():
        return
    blended = canvas[region].astype(np.float32) * (1.0 - _MASK_ALPHA) + np.float32(colour) * _MASK_ALPHA
    canvas[region] = blended.round().astype(np.uint8)
    # A crisp outline so the mask boundary can be judged against the echoes underneath.
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, style.thin, cv2.LINE_AA)


def _to_canvas(point, k: np.ndarray) -> np.ndarray | None:
    """Frame pixel (x, y) -> float position on the canvas (``k``: canvas pixels per frame pixel, x and y)."""
    if point is None:
        return None
    p = np.asarray(point, dtype=np.float64)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        return None
    return (p + 0.5) * k - 0.5


def _fixed(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0]) * _ONE), round(float(p[1]) * _ONE)


def _line(canvas, a, b, colour, thickness) -> None:
    """A line on a dark edge, seen against bright echoes as against dark ones."""
    cv2.line(canvas, _fixed(a), _fixed(b), _EDGE_COLOUR, _edged(thickness), cv2.LINE_AA, _SHIFT)
    cv2.line(canvas, _fixed(a), _fixed(b), colour, thickness, cv2.LINE_AA, _SHIFT)


def _edged(thickness: int) -> int:
    """The width of a line's dark edge: a third of the line at each side, 1 pixel at least, so
    that it stays seen when a large overlay is shown shrunk."""
    return thickness + 2 * max(1, round(thickness / 3))


def _dashed_line(canvas, a, b, colour, thickness, dash: float) -> None:
    """:func:`_line` in dashes of ``dash`` canvas pixels: the HSD is told from the AoP's lines by
    its pattern, not by its colour alone (both look beige to a deuteranope)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    length = float(np.hypot(*(b - a)))
    if length <= dash:
        _line(canvas, a, b, colour, thickness)
        return
    n = max(1, round(length / (2 * dash)))  # dashes, evenly spread, one at each end
    step = (b - a) / (2 * n - 1)
    for i in range(0, 2 * n - 1, 2):
        _line(canvas, a + i * step, a + (i + 1) * step, colour, thickness)


def _dot(canvas, p, radius, colour, filled=True, thickness=1) -> None:
    cv2.circle(canvas, _fixed(p), int(radius * _ONE), colour, -1 if filled else thickness, cv2.LINE_AA, _SHIFT)


def _draw_geometry(canvas: np.ndarray, m: Measurement, k: np.ndarray, style: _Style) -> None:
    lm = _drawn_landmarks(m)
    inferior = _to_canvas(lm.ps_inferior_end, k)
    superior = _to_canvas(lm.ps_superior_end, k)
    tangent = _to_canvas(lm.fh_tangent_point, k)
    hsd_point = _to_canvas(lm.hsd_point, k)

    if inferior is not None and superior is not None:
        _line(canvas, inferior, superior, _AXIS_COLOUR, style.line)
        _dot(canvas, superior, style.marker * 0.6, _AXIS_COLOUR)
    tangent_end = None
    if inferior is not None and tangent is not None:
        # Run the tangent on past the touching point so the line, not just a chord, is seen.
        tangent_end = tangent + 0.35 * (tangent - inferior)
        _line(canvas, inferior, tangent_end, _AXIS_COLOUR, style.line)
        _dot(canvas, tangent, style.marker * 0.6, _AXIS_COLOUR)
    if inferior is not None and hsd_point is not None:
        _draw_hsd(canvas, m, inferior, hsd_point, style, tangent_end)
    if inferior is not None and superior is not None and tangent is not None and m.aop_deg is not None:
        _draw_aop(canvas, m, inferior, superior, tangent, k, style)
    if inferior is not None:
        # Inferior end last, on top: it is the vertex of both measurements. Its ring marker
        # is explained in the panel's legend rather than by a label that would crowd the vertex.
        _inferior_marker(canvas, inferior, style)


def _drawn_landmarks(m: Measurement) -> Landmarks:
    """The landmarks to draw: none for a failed measurement (an axis and tangent on a frame that
    could not be measured invite reading an angle off it), whatever one built by hand holds."""
    return Landmarks() if m.status == "failed" else m.landmarks


def _inferior_marker(canvas, p, style: _Style) -> None:
    _dot(canvas, p, style.marker * 1.25, (0, 0, 0), filled=False, thickness=style.line + 2)
    _dot(canvas, p, style.marker * 1.25, _TEXT_COLOUR, filled=False, thickness=style.line)
    _dot(canvas, p, style.marker * 0.5, _AXIS_COLOUR)


def _draw_aop(canvas, m: Measurement, inferior, superior, tangent, k: np.ndarray, style: _Style) -> None:
    aop = float(m.aop_deg)
    # The angle was measured in physical space; build the arc there too (physical size of a
    # canvas pixel: the spacing over the enlargement), so it ends on the tangent whether or not
    # the canvas pixels are square, and map it back to the canvas.
    scale = np.array(geometry_scale(m.spacing_mm), dtype=np.float64) / k
    u = (superior - inferior) * scale
    t = (tangent - inferior) * scale
    if not np.any(u) or not np.any(t):
        return
    turn = math.degrees(math.atan2(u[0] * t[1] - u[1] * t[0], u @ t)) % 360.0
    # Of the two ways round from the axis to the tangent, take the one the measured angle
    # describes (AoP can exceed 180 deg, i.e. the long way round).
    sign = 1.0 if abs(turn - aop) <= abs((360.0 - turn) - aop) else -1.0
    u_dir = u / np.linalg.norm(u)
    radius_canvas = 0.45 * min(np.linalg.norm(superior - inferior), np.linalg.norm(tangent - inferior))
    radius_canvas = max(radius_canvas, 6.0 * style.marker)
    radius = radius_canvas / float(np.linalg.norm(u_dir / scale))  # canvas length along the axis -> physical
    steps = max(8, int(aop / 2))
    angles = np.radians(sign * np.linspace(0.0, aop, steps + 1))
    c, sn = np.cos(angles), np.sin(angles)
    dirs = np.stack([u_dir[0] * c - u_dir[1] * sn, u_dir[0] * sn + u_dir[1] * c], axis=1)
    arc = inferior + radius * dirs / scale
    pts = np.round(arc * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, _EDGE_COLOUR, _edged(style.line), cv2.LINE_AA, _SHIFT)
    cv2.polylines(canvas, [pts], False, _AXIS_COLOUR, style.line, cv2.LINE_AA, _SHIFT)

    # The value goes on the far side of the vertex from the arc's middle: inside the angle
    # lie the HSD segment and the head, outside it (towards the skin) there is room.
    mid = dirs[len(dirs) // 2] / scale
    mid = mid / np.linalg.norm(mid)
    text = _aop_text(m)
    tw, th, _ = _text_size(text, style, 1.0)
    reach = 3.0 * style.marker + 0.5 * abs(mid[0]) * tw + 0.5 * abs(mid[1]) * th
    _label(canvas, text, inferior - mid * reach, _AXIS_COLOUR, style, 1.0, centre=True)


def _aop_text(m: Measurement) -> str | None:
    """"AoP 146.2°", None without an AoP. A number a warning puts in doubt must not look like a
    good frame's (a frame upside down read 106.0 deg in the same label as a sound 146.2): said
    in words, "(doubtful)", whatever one's colour vision."""
    if m.aop_deg is None:
        return None
    return f"AoP {m.aop_deg:.1f}\u00b0" + (" (doubtful)" if m.aop_doubtful else "")


def _hsd_text(m: Measurement) -> str | None:
    """"HSD 5.5 mm" (or px without a calibration), "(doubtful)" as for the AoP; None without one."""
    doubted = " (doubtful)" if m.hsd_doubtful else ""
    if m.hsd_mm is not None:
        return f"HSD {m.hsd_mm:.1f} mm{doubted}"
    if m.hsd_px is not None:
        return f"HSD {m.hsd_px:.1f} px{doubted}"
    return None


def _draw_hsd(canvas, m: Measurement, inferior, hsd_point, style: _Style, tangent_end=None) -> None:
    """The HSD's dashed line, its end tick and its label; ``tangent_end``: where the AoP's tangent
    line, drawn from ``inferior``, ends (None where none is drawn), which the label keeps clear of."""
    _dashed_line(canvas, inferior, hsd_point, _HSD_COLOUR, style.line, 1.5 * style.marker)
    d = hsd_point - inferior
    length = float(np.hypot(*d))
    if length > 0:
        n = np.array([-d[1], d[0]]) / length
        tick = n * style.marker * 0.9
        _line(canvas, hsd_point - tick, hsd_point + tick, _HSD_COLOUR, style.line)
    text = _hsd_text(m)
    if text is None:
        return
    # Past the segment's end, inside the head, clear of the angle's vertex; where that covers the AoP's tangent
    # (below about 120 deg it runs close to the infrapubic line: the label had hidden it where it meets the
    # skull, an output review), beside the end on the side away from it.
    tw, th, _ = _text_size(text, style, 1.0)
    direction = d / length if length > 0 else np.array([0.0, 1.0])
    reach = 2.0 * style.marker + 0.5 * abs(direction[0]) * tw + 0.5 * abs(direction[1]) * th
    anchor = hsd_point + direction * reach
    if tangent_end is not None and length > 0 and _box_meets_segment(anchor, tw, th, inferior, tangent_end,
                                                                     style.marker):
        across = np.array([-direction[1], direction[0]])
        away = -1.0 if float(np.dot(tangent_end - inferior, across)) > 0 else 1.0
        aside = style.marker + 0.5 * abs(across[0]) * tw + 0.5 * abs(across[1]) * th
        anchor = hsd_point + direction * style.marker + away * across * aside
    _label(canvas, text, anchor, _HSD_COLOUR, style, 1.0, centre=True)


def _box_meets_segment(centre, width: float, height: float, a, b, pad: float) -> bool:
    """Whether the box of ``width`` x ``height`` around ``centre``, widened by ``pad`` on every
    side, holds any point of the segment ``a``-``b`` (canvas pixels)."""
    points = np.asarray(a, float)[None] + np.linspace(0.0, 1.0, 200)[:, None] * (np.asarray(b, float) - a)[None]
    half = np.array([width / 2.0 + pad, height / 2.0 + pad])
    return bool((np.abs(points - np.asarray(centre, float)[None]) <= half[None]).all(axis=1).any())


def _drawable(text: str) -> str:
    """``text`` with each character the Hershey font has no glyph for (Chinese, emoji), which
    OpenCV draws as "?", written as its escape ``\\u5f20``: two patients' folders named 张三 and
    李四 had both been captioned "??". Latin and Cyrillic letters are drawn as they are."""
    return "".join(ch if ch.isascii() or _has_glyph(ch) else
                   (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}") for ch in text)


@functools.lru_cache(maxsize=4096)
def _has_glyph(ch: str) -> bool:
    def ink(text: str) -> bytes:
        canvas = np.zeros((24, 24), np.uint8)
        cv2.putText(canvas, text, (2, 18), _FONT, 0.6, 255, 1)
        return canvas.tobytes()

    return ink(ch) != ink("?")


def _text_size(text: str, style: _Style, rel: float) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text.replace("\u00b0", " "), _FONT, style.font_scale * rel, style.text_thickness)
    return tw, th, base


def _label(canvas, text: str, anchor, colour, style: _Style, rel: float, centre: bool = False) -> None:
    """Outlined text at ``anchor`` (its lower-left, or its centre), kept inside the canvas."""
    tw, th, base = _text_size(text, style, rel)
    h, w = canvas.shape[:2]
    x, y = float(anchor[0]), float(anchor[1])
    if centre:
        x, y = x - tw / 2.0, y + th / 2.0
    # Clear of the edges by the outline's width and a degree sign's overhang, which the measured
    # width (a space for the sign) leaves out: a label had lost its sign at the right edge.
    pad = 2 * max(1, style.text_thickness) + 3
    extra = int(math.ceil(0.4 * th)) if "\u00b0" in text else 0
    x = int(np.clip(x, pad, max(pad, w - tw - extra - pad)))
    y = int(np.clip(y, th + pad, max(th + pad, h - base - pad)))
    _put_text(canvas, text, (x, y), colour, style, rel)


def _put_text(canvas, text: str, origin: tuple[int, int], colour, style: _Style, rel: float) -> None:
    """Hershey text with a dark outline; a degree sign is drawn as a small raised circle.

    The glyphs are rendered once into a coverage mask and the outline is that mask dilated,
    because thicker putText strokes also shift the glyphs and would leave a ghost.
    """
    fs = style.font_scale * rel
    ink = np.zeros(canvas.shape[:2], dtype=np.uint8)
    x, y = origin
    parts = text.split("\u00b0")
    for i, part in enumerate(parts):
        if part:
            cv2.putText(ink, part, (x, y), _FONT, fs, 255, style.text_thickness, cv2.LINE_AA)
            x += cv2.getTextSize(part, _FONT, fs, style.text_thickness)[0][0]
        if i < len(parts) - 1:
            (sw, _), _ = cv2.getTextSize(" ", _FONT, fs, style.text_thickness)
            (_, ch), _ = cv2.getTextSize("0", _FONT, fs, style.text_thickness)
            r = max(2, round(ch * 0.2))
            cv2.circle(ink, (x + r + 1, y - ch + r), r, 255, max(1, style.text_thickness - 1), cv2.LINE_AA)
            x += max(sw, 2 * r + 2 + style.text_thickness)  # the sign's own width where a space is narrower
    k = 2 * max(1, style.text_thickness) + 3  # two pixels or more each side: legible on bright bone
    halo = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    for coverage, c in ((halo, (0, 0, 0)), (ink, colour)):
        a = coverage.astype(np.float32)[..., None] / 255.0
        touched = coverage > 0
        mixed = canvas[touched].astype(np.float32) * (1.0 - a[touched]) + np.float32(c) * a[touched]
        canvas[touched] = mixed.round().astype(np.uint8)


def _wrap(words: list[str], width: int, style: _Style, rel: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in (piece for word in words for piece in _pieces(word, width, style, rel)):
        trial = word if not current else f"{current} {word}"
        if current and _text_size(trial, style, rel)[0] > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def _pieces(word: str, width: int, style: _Style, rel: float) -> list[str]:
    """``word`` cut into pieces that each fit ``width`` pixels: a file name without spaces
    wider than the panel had been clipped at its edge."""
    pieces: list[str] = []
    while _text_size(word, style, rel)[0] > width and len(word) > 1:
        cut = len(word) - 1
        while cut > 1 and _text_size(word[:cut], style, rel)[0] > width:
            cut -= 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces + [word]


def _wrap_values(values: list[str], width: int, style: _Style, rel: float) -> list[str]:
    """``values`` ("AoP 146.2°", "HSD 5.5 mm", ...) three spaces apart on as few lines of
    ``width`` pixels as they fit, each kept whole on one line where it fits one by itself (a
    mirrored frame's "(doubtful)" and "mirror TTA" had run off a 512-pixel panel)."""
    lines: list[str] = []
    for value in values:
        trial = f"{lines[-1]}   {value}" if lines else value
        if lines and _text_size(trial, style, rel)[0] <= width:
            lines[-1] = trial
        else:
            lines.append(value)
    fitted: list[str] = []
    for line in lines:  # a value wider than a line by itself wraps between its words
        fitted += [line] if _text_size(line, style, rel)[0] <= width else _wrap(line.split(), width, style, rel)
    return fitted


def status_lines(m: Measurement) -> list[str]:
    """What an overlay says of a measurement's status, in words: the status with what failed it
    (a failed frame) or what puts its values in doubt (a warned one), then its other warnings
    ("also"), then their codes, as the CSV gives them and ``ipp-seg reasons`` explains them. A
    list of codes had mixed a failure's cause with warnings that did not cause it, and said of
    none which doubted the AoP (a clinical imaging scientist's pass)."""
    if not m.reasons:
        return [m.status.upper()]
    if m.status == "failed":  # (a code no list knows, a file's, fails it)
        first = [r for r in m.reasons if REASONS.get(r, ("failed",))[0] == "failed"]
        heading = "FAILED"
    else:
        first = [r for r in m.reasons if r in ANGLE_IN_DOUBT or r in HSD_IN_DOUBT]
        doubted = " and ".join(value for value, doubting in (("AoP", ANGLE_IN_DOUBT), ("HSD", HSD_IN_DOUBT))
                               if not doubting.isdisjoint(first))
        heading = f"{m.status.upper()}, {doubted} doubtful" if first else m.status.upper()
    rest = [r for r in m.reasons if r not in first]
    if not first:
        first, rest = rest, []

    def said(codes: list[str]) -> str:
        return "; ".join(REASON_TITLES.get(code, code.replace("_", " ")) for code in codes)

    return [f"{heading}: {said(first)}", *([f"also: {said(rest)}"] if rest else []),
            f"(codes: {', '.join([*first, *rest])})"]


def _text_panel(width: int, m: Measurement, title: str | None, style: _Style, tta: bool,
                model: str | None = None, brightened_by: float | None = None) -> np.ndarray:
    """Rows of text under the frame: title, values and legend, status and reasons."""
    rel = 0.9
    margin = max(6, style.marker * 2)
    _, th, base = _text_size("Ag", style, rel)
    step = th + base + max(4, style.marker)
    usable = width - 2 * margin

    rows: list[tuple[str, tuple[int, int, int]]] = []
    if title:
        # A name's bytes that are not UTF-8 come as lone surrogates, on which OpenCV's text
        # drawing crashes the process: written as escapes instead.
        title = _drawable(title.encode("utf-8", "backslashreplace").decode("utf-8"))
        rows.extend((line, _TEXT_COLOUR) for line in _wrap(title.split(), usable, style, rel))
    values = [_aop_text(m) or "AoP n/a", _hsd_text(m) or "HSD n/a"]  # as the labels on the image say
    # Where the millimetres came from when a person typed them in: the same HSD read from a
    # file's calibration and from --spacing-mm looked alike on the image (a clinician's pass).
    given = ", mm from a spacing given by hand" if m.spacing_source == "given" and m.hsd_mm is not None else ""
    values.append(f"({m.method}, orientation {m.orientation}{', mirror TTA' if tta else ''}{given})")
    rows.extend((line, _TEXT_COLOUR) for line in _wrap_values(values, usable, style, rel))
    if model:
        rows.extend((line, _TEXT_COLOUR) for line in _wrap(f"model {model}".split(), usable, style, rel))
    if brightened_by is not None:  # (the frame above is not the frame as recorded: said so)
        said = f"frame shown {brightened_by:.1f} times brighter than recorded"
        rows.extend((line, _TEXT_COLOUR) for line in _wrap(said.split(), usable, style, rel))
    status_colour = _STATUS_COLOURS.get(m.status, _STATUS_COLOURS["failed"])
    for line in status_lines(m):
        rows.extend((wrapped, status_colour) for wrapped in _wrap(line.split(), usable, style, rel))
    # An overlay travels alone (into a slide, a report, a chat): it says what made it is no device
    # (a QA auditor's pass found that only the README said so).
    rows.extend((line, _TEXT_COLOUR) for line in _wrap(RESEARCH_USE_SAID.split(), usable, style, rel))

    # Legend on its own last rows: a swatch per mask colour, each line as drawn, the vertex marker
    # (only what the frame shows: a legend entry for a mark not drawn would mislead).
    lm = _drawn_landmarks(m)
    entries = [("PS", "PS"), ("FH", "FH")]
    if lm.ps_inferior_end is not None and (lm.ps_superior_end is not None or lm.fh_tangent_point is not None):
        entries.append(("AoP lines", "aop"))
    if lm.ps_inferior_end is not None and lm.hsd_point is not None:
        entries.append(("HSD", "hsd"))
    if lm.ps_inferior_end is not None:
        entries.append(("PS inferior end", "vertex"))
    swatch = 2 * th
    gap = max(4, style.marker)
    legend: list[list[tuple[str, str, int, int]]] = [[]]  # rows of (name, kind, x, the mark's width)
    x = margin
    for name, kind in entries:
        mark = swatch if kind in ("aop", "hsd") else th  # a line's swatch is longer than a colour's
        wide = mark + gap + _text_size(name, style, rel)[0]
        if legend[-1] and x + wide > width - margin:
            legend.append([])
            x = margin
        legend[-1].append((name, kind, x, mark))
        x += wide + 2 * margin

    height = margin + step * (len(rows) + len(legend)) + margin // 2
    panel = np.empty((height, width, 3), dtype=np.uint8)
    panel[:] = _PANEL_COLOUR
    y = margin + th
    for text, colour in rows:
        _put_text(panel, text, (margin, y), colour, style, rel)
        y += step
    for row in legend:
        for name, kind, x, mark in row:
            middle = np.array([x, y - th / 2.0])
            if kind == "vertex":
                _inferior_marker(panel, middle + [th / 2.0, 0.0], style)
            elif kind == "aop":
                _line(panel, middle, middle + [swatch, 0.0], _AXIS_COLOUR, style.line)
            elif kind == "hsd":
                _dashed_line(panel, middle, middle + [swatch, 0.0], _HSD_COLOUR, style.line, swatch / 5.0)
            else:
                cv2.rectangle(panel, (x, y - th), (x + th, y), PS_COLOUR if kind == "PS" else FH_COLOUR, -1)
            _put_text(panel, name, (x + mark + gap, y), _TEXT_COLOUR, style, rel)
        y += step
    return panel
