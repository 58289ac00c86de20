"""Turning decoded pixels of any depth and colour model into one greyscale frame.

Output convention (shared by every reader): uint8 for 8-bit sources, values as stored;
float32 on the same 0-255 scale for deeper integer sources; float sources pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

# ITU-R BT.601 luma weights, the ones DICOM's YBR_FULL is defined with and OpenCV uses.
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luminance_rgb(rgb: np.ndarray) -> np.ndarray:
    """Luma of an (H, W, 3) RGB array, keeping the dtype for uint8/uint16, float32 otherwise."""
    if rgb.dtype in (np.uint8, np.uint16):
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return (rgb.astype(np.float32) @ _LUMA_RGB).astype(np.float32)


def to_output(grey: np.ndarray, *, bits_stored: int | None = None, signed: bool | None = None) -> np.ndarray:
    """Map a 2-D greyscale array onto the readers' output convention.

    ``bits_stored`` is the number of significant bits of an integer source (DICOM Bits Stored);
    without it the dtype's own range is used. ``signed`` overrides the dtype's signedness.
    """
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale array, got shape {grey.shape}")
    if grey.dtype == np.bool_:
        return grey.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(grey.dtype, np.floating):
        grey = grey.astype(np.float32, copy=False)
        finite = np.isfinite(grey)
        if not finite.all():
            # Resampled volumes mark pixels outside the field of view as NaN: they are
            # background. One NaN would otherwise make the normalised frame all NaN.
            if not finite.any():
                raise ValueError("no pixel holds a finite value (all NaN or infinite)")
            # +inf is saturated brightness, the brightest finite value (it had been made black with NaN).
            grey = np.where(finite, grey, np.where(grey == np.inf, grey[finite].max(), grey[finite].min()))
        return grey
    if not np.issubdtype(grey.dtype, np.integer):
        raise ValueError(f"unsupported pixel dtype {grey.dtype}")
    is_signed = np.issubdtype(grey.dtype, np.signedinteger) if signed is None else signed
    bits = bits_stored if bits_stored else grey.dtype.itemsize * 8
    if grey.dtype == np.uint8 and bits == 8 and not is_signed:
        return grey
    if is_signed:
        low, high = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1.0
    else:
        low, high = 0.0, 2.0**bits - 1.0
    if not is_signed and bits <= 8:
        # 8 bits allocated but fewer stored: still a uint8 source, put it on 0-255.
        scaled = np.rint(grey.astype(np.float32) * np.float32(255.0 / high))
        return np.clip(scaled, 0, 255).astype(np.uint8)
    out = (grey.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(out, 0.0, 255.0, out=out)


#: The VOI LUT functions of DICOM's display windows (PS3.3 C.11.2.1.3).
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class DisplayWindow:
    """A DICOM display window (Window Center / Width, VOI LUT Function): the values that a display
    shows from black to white. ``center`` and ``width`` are in the values the modality LUT gives,
    ``slope`` times the stored value plus ``intercept`` (Rescale Slope / Intercept; 1 and 0 where
    the header gives none)."""

    center: float
    width: float
    function: str = "LINEAR"
    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise ValueError(f"unknown VOI LUT function {self.function!r}")
        # LINEAR needs a width of at least 1 (PS3.3 C.11.2.1.2.1); the others any positive one.
        if not (np.isfinite(self.center) and np.isfinite(self.width)) or self.width <= 0 or (
                self.function == "LINEAR" and self.width < 1):
            raise ValueError(f"no display window has centre {self.center} and width {self.width} ({self.function})")


def windowed(stored: np.ndarray, window: DisplayWindow) -> np.ndarray:
    """Stored pixel values through a DICOM display window (PS3.3 C.11.2.1.2 and C.11.2.1.3), as
    float32 grey levels 0-255: what a viewer shows, 0 black and 255 white before any MONOCHROME1
    inversion. The rescale (:class:`DisplayWindow`'s slope and intercept) comes first, as in DICOM."""
    x = stored.astype(np.float64) * window.slope + window.intercept
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):  # (far below a narrow window: exp overflows to inf, the level to 0)
            out = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = ((x - c) / w + 0.5) * 255.0
    elif w == 1:
        out = np.where(x <= c - 0.5, 0.0, 255.0)  # a width of 1 is a threshold
    else:
        out = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.clip(out, 0.0, 255.0).astype(np.float32)


@dataclass(frozen=True)
class DisplayLut:
    """A DICOM VOI LUT (a VOI LUT Sequence's item, PS3.3 C.11.2.1.1): a table of display levels.
    The value ``slope`` times a stored value plus ``intercept`` (the modality LUT's rescale) that
    equals ``first_mapped`` is shown as ``table[0]``; values below it as ``table[0]``, above its end
    as ``table[-1]``; ``bits`` is the entries' depth (its LUT Descriptor's third value)."""

    first_mapped: int
    table: np.ndarray = field(repr=False, compare=False)
    bits: int
    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if self.table.ndim != 1 or not len(self.table):
            raise ValueError("its LUT Data holds no entries")
        if not 1 <= self.bits <= 16:
            raise ValueError(f"its entries of {self.bits} bits are none that DICOM defines (8 to 16)")


def looked_up(stored: np.ndarray, lut: DisplayLut) -> np.ndarray:
    """Stored pixel values through a DICOM VOI LUT (:class:`DisplayLut`), as float32 grey levels
    0-255: the rescale first, then the table, whose entries' full range (0 to 2**bits - 1) is
    black to white. An entry above that range (a table whose descriptor understates its depth, as
    some writers' do) widens the range to the table's own depth rather than clipping to white."""
    x = np.rint(stored.astype(np.float64) * lut.slope + lut.intercept)
    index = np.clip(x - lut.first_mapped, 0, len(lut.table) - 1).astype(np.intp)
    top = float((1 << max(lut.bits, int(lut.table.max()).bit_length())) - 1)
    return (lut.table[index].astype(np.float32) * np.float32(255.0 / top)).astype(np.float32)


#: A frame whose brightest echoes (:func:`brightest_echoes`) lie below this grey level of 255 is
#: dark: under-gained, or stored in a small part of its values' range. The 1,058 PSFHS frames lie
#: at 105 or above; the networks read their angles alike down to about a tenth of their gain
#: (benchmarks/dark_frames.py), but an eye does not read such an overlay, nor do the checks of
#: the frame's black bands and sector, whose levels are grey levels of frames as bright as PSFHS's.
DARK_FRAME_LEVEL = 32.0
#: Where a dark frame's brightest echoes are brought (:func:`brightened`): PSFHS's median.
BRIGHTENED_LEVEL = 200.0
#: Below this level a frame is darker than any the checks of black bands and sectors were
#: chosen on (PSFHS: 105 and above): they read it brightened, warned of or not.
CHECKS_BRIGHTENED_BELOW = 100.0


#: A float image whose values reach no higher than this is on the 0-1 scale: a resampling's
#: overshoot (a B-spline's, to 1.2) leaves it there, and a 0-255 frame so dark is black to the eye.
_UNIT_SCALE_TOP = 1.5


def on_8bit_scale(image: np.ndarray) -> np.ndarray | None:
    """A greyscale image's values on the 0-255 scale: uint8 as it is, other numbers as they are
    when they lie on it (a rounding's worth outside still does), a float image on the 0-1 scale
    (up to :data:`_UNIT_SCALE_TOP`) times 255; None for an empty image or one on another scale
    (16-bit values, say)."""
    if image.dtype == np.uint8:
        return image
    if image.size == 0:
        return None
    low, high = float(image.min()), float(image.max())
    if low < -1.0 or high > 256.0:
        return None
    return np.clip(image * np.float32(255.0) if high <= _UNIT_SCALE_TOP else image, 0, 255)


#: Grey levels from this one up are left out of a frame's brightest echoes: white text, lines and
#: banners burnt into a screen capture, which no gain setting dims.
_WHITE_MARKS_LEVEL = 250.0


def brightest_echoes(image: np.ndarray) -> float | None:
    """The grey level of an image's brightest echoes, 0-255: the 99th percentile of its values
    (:func:`on_8bit_scale`) below 250 (bone and the skull, which a dark display map leaves
    bright but a low gain does not; not white text or a banner, which a gain does not dim).
    None for an empty image, one on another scale, or one all white."""
    grey = on_8bit_scale(image)
    if grey is None:
        return None
    below_white = grey[grey < _WHITE_MARKS_LEVEL]
    return float(np.percentile(below_white, 99)) if below_white.size else None


def brightened(image: np.ndarray, echoes: float) -> np.ndarray:
    """``image`` on the 0-255 scale (:func:`on_8bit_scale`: a 0-1 float frame is taken to it
    first) with its grey values multiplied so that its brightest ``echoes``
    (:func:`brightest_echoes`) come to :data:`BRIGHTENED_LEVEL`, clipped to 255, as float32; as
    it is where ``echoes`` is not below that level, or under 1 (a black frame has none), or the
    image is on no such scale."""
    grey = on_8bit_scale(image) if 1.0 <= echoes < BRIGHTENED_LEVEL else None
    if grey is None:
        return image
    return np.clip(grey.astype(np.float32) * np.float32(BRIGHTENED_LEVEL / echoes), 0.0, 255.0)


def invert(grey: np.ndarray) -> np.ndarray:
    """Invert an output-convention frame (MONOCHROME1: low values are bright)."""
    if grey.dtype == np.uint8:
        return np.uint8(255) - grey
    return np.float32(255.0) - grey


def drop_alpha_to_grey(arr: np.ndarray, *, order: str) -> np.ndarray:
    """Greyscale of an (H, W), (H, W, 1|2|3|4) array; ``order`` is "rgb" or "bgr" for colour.

    Alpha is dropped (a 2-channel array is grey + alpha).
    """
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"expected an image array, got shape {arr.shape}")
    channels = arr.shape[2]
    if channels in (1, 2):
        return arr[:, :, 0]
    if channels in (3, 4):
        colour = arr[:, :, :3]
        if order == "bgr":
            colour = colour[:, :, ::-1]
        return luminance_rgb(colour)
    raise ValueError(f"unsupported number of channels: {channels}")


class GreyPixels(NamedTuple):
    """A colour frame turned greyscale (the readers' output convention), with
    :func:`colour_marks` of the colour it was: what a reader yields for a colour frame in place
    of the greyscale array alone."""

    pixels: np.ndarray
    colour_marks: np.ndarray | None


#: A pixel is drawn in a colour of its own where its chroma (the largest channel less the
#: smallest, on the 0-255 scale) is at least MARK_MIN_CHROMA and one of its channels lies at
#: least MARK_MIN_DEVIATION from the frame's own palette at its brightness: the colour each
#: grey level is shown in (grey, sepia, blue), fitted to the frame as a curve of its luma.
#: Yellow calipers (255, 255, 0) lie 226 from grey; a palette's own pixels lie within 20 of
#: its curve, also where a JPEG's compression (quality 20-95) smears its chroma across edges.
#: (A first rule, a distance from the frame's median chromaticity, took such smears in
#: strongly tinted JPEGs for marks: a QA pass.)
MARK_MIN_CHROMA = 60.0
MARK_MIN_DEVIATION = 80.0
_PALETTE_OUTLIER = 40.0  # (pixels this far from a first fit are left out of the second)


def colour_marks(rgb: np.ndarray) -> np.ndarray | None:
    """Where an (H, W, 3) RGB frame is drawn in a colour apart from its own palette: calipers,
    measurement lines and text a scanner draws in colour, colour-flow Doppler. A (H, W) bool
    array, or None where there is no such pixel (a greyscale frame stored as RGB, or one shown
    in a tinted palette, sepia or blue, whose every pixel takes its grey level's colour).

    A pixel counts where its chroma is at least :data:`MARK_MIN_CHROMA` (0-255 scale: uint16
    and float frames are taken on their own range) and a channel lies at least
    :data:`MARK_MIN_DEVIATION` from the frame's palette at its luma: each channel fitted as a
    quadratic of the luma over every 4th row and column, twice, the second time without the
    pixels the first left far off (the marks themselves). Pale colours may not count."""
    colour = rgb[..., :3]
    if colour.dtype != np.uint8:
        top = 65535.0 if colour.dtype == np.uint16 else max(float(np.nanmax(colour)), 1e-6)
        colour = np.clip(np.nan_to_num(colour.astype(np.float32)) * np.float32(255.0 / top), 0, 255).astype(np.uint8)
    colour = np.ascontiguousarray(colour)
    r, g, b = cv2.split(colour)
    chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    ys, xs = np.nonzero(chroma >= MARK_MIN_CHROMA)
    if not len(ys):  # (a greyscale frame stored as RGB: the common case, and quick)
        return None
    luma = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255

    def curve(levels: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(levels), levels, levels * levels], axis=1)

    sample = colour[::4, ::4].reshape(-1, 3).astype(np.float32)
    basis = curve(luma[::4, ::4].ravel())
    kept = np.ones(len(sample), bool)
    for _ in range(2):
        palette = np.linalg.lstsq(basis[kept], sample[kept], rcond=None)[0]
        kept = np.abs(sample - basis @ palette).max(axis=1) < _PALETTE_OUTLIER
    deviation = np.abs(colour[ys, xs].astype(np.float32) - curve(luma[ys, xs]) @ palette).max(axis=1)
    apart = deviation >= MARK_MIN_DEVIATION
    if not apart.any():
        return None
    marks = np.zeros(chroma.shape, bool)
    marks[ys[apart], xs[apart]] = True
    return marks


def grey_with_marks(rgb: np.ndarray, luma: np.ndarray | None = None, **to_output_args) -> np.ndarray | GreyPixels:
    """The greyscale frame of an (H, W, 3) RGB array (:func:`luminance_rgb`, or ``luma`` where the
    source stores it; :func:`to_output`), with its :func:`colour_marks` where it has any (a
    :class:`GreyPixels`), else alone."""
    grey = to_output(luminance_rgb(rgb) if luma is None else np.ascontiguousarray(luma), **to_output_args)
    marks = colour_marks(rgb)
    return grey if marks is None else GreyPixels(grey, marks)
