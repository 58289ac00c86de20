"""Result types of the labour-progress measurements and their machine-readable reason codes."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "METHODS",
    "ORIENTATIONS",
    "STATUSES",
    "REASONS",
    "REASON_TITLES",
    "REASON_ACTIONS",
    "SEGMENTATION_REASONS",
    "SPACING_SOURCES",
    "angle_in_doubt",
    "distance_in_doubt",
    "HSD_IN_DOUBT",
    "failing_reasons_first",
    "Landmarks",
    "Measurement",
    "check_spacing",
]

METHODS: tuple[str, ...] = ("ellipse", "challenge", "contour")
ORIENTATIONS: tuple[str, ...] = ("standard", "mirrored")
STATUSES: tuple[str, ...] = ("ok", "warning", "failed")
# Where a measurement's pixel spacing came from, so that a millimetre value can be audited:
# code -> meaning (64 characters or fewer, as a DICOM SR code meaning).
SPACING_SOURCES: dict[str, str] = {
    "ultrasound_region": "calibration of the segmented DICOM ultrasound region",
    "pixel_spacing": "DICOM Pixel Spacing",
    "imager_pixel_spacing": "DICOM Imager Pixel Spacing",
    "image_header": "spacing in the image file's header (MHA, NRRD, NIfTI)",
    "given": "spacing given by the user for a file without one",
}

# Reason code -> (severity, meaning). A "failed" reason empties every value; a "warning"
# reason keeps the values it does not concern.
REASONS: dict[str, tuple[str, str]] = {
    "ps_missing": ("failed", "no pubic symphysis pixels with the PS label"),
    "fh_missing": ("failed", "no fetal head pixels with the FH label"),
    "ps_too_small": ("failed", "the kept PS component is too small to fit or measure"),
    "fh_too_small": ("failed", "the kept FH component is too small to fit or measure"),
    "ps_fit_failed": ("failed", "no ellipse could be fitted to the PS contour"),
    "fh_fit_failed": ("failed", "no ellipse could be fitted to the FH contour"),
    "tangent_undefined": ("failed", "the PS inferior end lies inside the FH contour or ellipse"),
    "aop_impossible": ("failed", "the angle comes out above 240°, 40° beyond the largest any of the 1,058 "
                       "PSFHS expert masks gives (199.5°): the head lies where no transperineal view shows it "
                       "for the display convention assumed (an upside-down or turned frame, or masks drawn "
                       "otherwise), so the AoP, and the HSD taken at the same end, measure nothing"),
    "ps_round": ("failed", "PS short/long axis ratio above 0.90 (no expert outline of the 1,058 PSFHS frames is "
                 "above 0.75): it has no long axis, the one a fit finds turns with a pixel of its outline, and "
                 "the AoP with it"),
    "ps_cut_off": ("failed", "the frame's edge (or a DICOM capture's ultrasound region's) cuts the PS off: 10 % "
                   "or more of the ellipse fitted to its outline inside the frame lies beyond it, and the axis "
                   "and inferior end measured are no longer the structure's (PSFHS expert masks so cut move the "
                   "AoP by a median 3.3-12°, the network's masks of cut frames by 8.3)"),
    "fh_not_seen": ("failed", "the network drew a head where the frame shows no skull: its outline is dark against "
                    "the frame (the brightest echo within 4 pixels, at the outline's 75th percentile, below 0.25 of "
                    "the frame's 99th percentile) and no brighter than the head's inside (below 1.5 times it); no "
                    "PSFHS expert head is both: a head out of view, behind dark fluid, which the network drew "
                    "anyway; an angle or a distance to it measures nothing"),
    "anatomy_unrecognised": ("failed", "the network is unsure of both the head and the pubic symphysis: each is "
                             "either drawn below its floor (see low_confidence and ps_low_confidence; no frame "
                             "of the 1,058 PSFHS frames is below either) or not drawn at all: the frame is not "
                             "a transperineal view it knows (another modality or view, a report's screen "
                             "capture, a photograph, noise), an angle read from its masks would measure "
                             "nothing, and no DICOM SEG is made of it"),
    "fh_cut_off": ("failed", "the frame's edge (or a DICOM capture's ultrasound region's) cuts the head off: 10 % "
                   "or more of the ellipse fitted to its outline inside the frame lies beyond it, and its outline "
                   "is partly the frame's edge (PSFHS expert masks so cut move the AoP by a median 2.1-3.1°, "
                   "the network's masks of cut frames by 5.0)"),
    "ps_fragmented": ("warning", "another PS component exceeds 10 % of the kept one's area, or (challenge "
                                 "method) is the one the evaluator's fit takes"),
    "fh_fragmented": ("warning", "another FH component exceeds 10 % of the kept one's area, or (challenge "
                                 "method) is the one the evaluator's fit takes"),
    "fh_ellipse_poor_fit": ("warning", "the FH mask and its fitted ellipse overlap with IoU < 0.85"),
    "ps_nearly_round": ("warning", "PS short/long axis ratio above 0.70, rounder than 99.5 % of expert outlines: "
                        "its long axis, and so the AoP, is ill-defined"),
    "ps_thin": ("warning", "PS short/long axis ratio below 0.25, a sliver or a line (no expert outline of the 1,058 "
                "PSFHS frames is under 0.38): an ellipse fitted to its straight sides runs past its ends, and its "
                "axis, and so the AoP, hang on a few pixels"),
    "ps_at_frame_edge": ("warning", "the PS touches the edge of the frame (or of a DICOM capture's ultrasound "
                         "region), less than 10 % of it beyond (see ps_cut_off): its axis and inferior end may "
                         "have moved (no expert PS in the 1,058 PSFHS frames does; expert masks so cut move the "
                         "AoP by a median 0.2-1.8°, the network's masks of cut frames by 2.9, over 5 in 27 %)"),
    "fh_at_frame_edge": ("warning", "the FH touches the edge of the frame (or of a DICOM capture's ultrasound "
                         "region), less than 10 % of it beyond (see "
                         "fh_cut_off): the frame's edge then forms part of its contour and of the ellipse fitted "
                         "to it (no expert FH in the PSFHS frames does; expert masks so cut move the AoP by a "
                         "median 0.3-1.3°)"),
    "ps_below_head": ("warning", "the PS's centre is not above the head's, as it is in every PSFHS frame: the frame "
                      "may be upside down or in another display convention, and the AoP taken at the wrong end"),
    "orientation_doubtful": ("warning", "the PS's tilt and the head's side look like a frame displayed the other way "
                             "round (left-right) from the orientation assumed, as 1 % of PSFHS expert outlines "
                             "and about 3 in 4 mirrored ones do: if the machine displays frames mirrored, the "
                             "AoP was taken at the wrong end (--orientation)"),
    "ps_touches_head": ("warning", "the PS and the head are drawn touching (a pixel of one next to one of the "
                        "other; no expert mask of the 1,058 PSFHS frames has them nearer than 2.8 px): where they "
                        "meet, one label took the other's pixels, and the PS's inferior end, the tangent from it "
                        "and the HSD are read at a boundary no one drew (on exact synthetic scenes a head touching "
                        "the PS moved the AoP by up to 17°, and one over the PS's end gave an angle where no "
                        "tangent exists)"),
    "ps_axis_near_vertical": ("warning", "PS axis within 10° of vertical: the inferior end is ill-posed"),
    "aop_out_of_range": ("warning", "AoP outside 60-200°"),
    "aop_folded": ("warning", "with the challenge method: the head has passed the line of the PS axis (the angle "
                   "swept from the axis of the challenge's own fit is above 180°), and the challenge's "
                   "unsigned angle folds it back below 180°, as its evaluator does: the number given is the "
                   "evaluator's, not the angle of progression (the ellipse method gives that)"),
    "hsd_undefined": ("warning", "the infrapubic line does not meet the FH contour on the head's side (as with "
                      "every AoP below about 90°: the head then lies wholly on the PS's side of the line)"),
    "hsd_unstable": ("warning", "the infrapubic line meets the head at a grazing angle (most often at an AoP just "
                     "above 90°): turning the PS axis by 2°, less than two expert readings of a frame differ, moves "
                     "the HSD by more than 20 % or off the head, as in 1.7 % of the PSFHS expert masks that give "
                     "an HSD"),
    "low_confidence": ("warning", "the network is unsure of the head it drew (mean probability below 0.90, or "
                       "below the model card's own floor for a model of one's own; the validation frames of the "
                       "default's twin are above 0.94): the frame may not be a "
                       "transperineal view it knows, such as another modality, another view or noise"),
    "ps_low_confidence": ("warning", "the network is unsure of the pubic symphysis it drew (mean probability below "
                          "0.90, or below the model card's own floor for a model of one's own; the validation "
                          "frames of the default's twin are above 0.93): the symphysis "
                          "may be out of the frame or hidden, and the one drawn invented; the AoP hangs on it"),
    "frame_small": ("warning", "the image the network was shown is less than 96 pixels on its shorter side (a "
                    "thumbnail, a small export): the network sees it enlarged, and outlines of so few pixels swing "
                    "the angle (validation frames scaled to 64 pixels read their AoP a median 2.7° from the full "
                    "frame's, 8.4° at the 90th percentile; at 96 pixels 1.7° and 4.6°); measure the full-size "
                    "image"),
    "head_small_in_frame": ("warning", "the head spans less than 0.30 of the network's view of the frame (as a disc "
                            "of equal area), smaller than in 1,056 of the 1,058 PSFHS frames: "
                            "the anatomy is smaller than the models were validated on, as in a screen capture with "
                            "a margin or text around the image; crop the frame to the ultrasound image"),
    "other_view_not_measured": ("warning", "the frame holds another view beside the one the network was shown (a "
                                "dual view: a second 2-D tissue region apart from it, at least half its size): only "
                                "the largest, the first of equal ones, was segmented; to measure the other, crop the "
                                "frame to it"),
    "frame_saturated": ("warning", "more than 5 % of the imaged tissue is at full brightness, over-gained (at "
                        "most 1.8 % in the 1,058 PSFHS frames): the network finds the PS by its brightness, and on "
                        "PSFHS frames with the gain raised 2 times its AoP moved by a median 1.8°, 6.1 at the "
                        "90th percentile (2.5 times: 2.9 and 9.8); lower the gain, or check the PS the overlay "
                        "shows"),
    "frame_dark": ("warning", "the frame is dark: its brightest echoes lie below 32 of 255 (105 or above in the "
                   "1,058 PSFHS frames), an under-gained frame or one stored in a small part of its values' "
                   "range; the network reads each frame by its own grey levels and its AoP held (PSFHS frames at "
                   "a tenth of their gain moved by a median 0.5°, 1.7 at the 90th percentile), but the overlays "
                   "of predict and batch show the frame brightened for the eye, and the checks of its black bands "
                   "and sector were made on it so brightened; raise the gain"),
    "marks_over_anatomy": ("warning", "the frame has marks drawn over the PS or the head in a colour of their "
                           "own (calipers, measurement lines or text, as a scanner draws them, or colour flow): "
                           "the network reads grey levels, and takes such a line for tissue (a sonographer's "
                           "dotted PS axis drawn on a PSFHS frame moved its AoP by 40°); export the frame without "
                           "the annotations, or check the PS and head the overlay shows"),
    "sector_upside_down": ("warning", "the imaged sector is wider near the top of the frame than deep in it, and "
                           "short of the top edge where a probe at the top would meet it, as in no PSFHS frame and "
                           "in 81 % of them turned by 180 degrees: the frame is probably displayed upside down (the "
                           "probe at the bottom), and the AoP taken on anatomy turned over; check the display"),
    "ps_at_black_band": ("warning", "the PS lies against a black band at an edge of the image (nearer to it than "
                         "3 % of the image), as a crop padded back to its size or a black border leaves one: "
                         "part of the PS may be hidden there, and its axis and inferior end moved with it (the "
                         "AoP of validation frames so padded moved by a median 8-16°; no expert PS of the "
                         "1,058 PSFHS frames lies nearer than 5.5 %); check the frame's export"),
    "aop_unsteady": ("warning", "the AoP lies more than 10° from the median AoP of the cine's other frames within "
                     "0.5 s of it, most of which agree with each other (at least two measured): the anatomy moves "
                     "far less in half a second, so this frame's masks are probably not the anatomy's (on still "
                     "cines made of the validation frames, 0.4 % of frames are flagged, and their AoP lies a "
                     "median 18.5° from the expert's, against 5.7° for the others)"),
    "pixel_aspect_implausible": ("warning", "the calibration's pixels are more than 4 times taller than wide or "
                                 "wider than tall (with spacing_implausible): scan-converted pixels are square or "
                                 "nearly, so the calibration is taken as damaged and the angle measured on the "
                                 "stored pixels as square, as the network saw them; if the pixels truly are of that "
                                 "shape, the angle is wrong"),
    "spacing_unknown": ("warning", "pixel spacing unknown: distances in pixels only"),
    "spacing_implausible": ("warning", "the pixel spacing lies outside 0.01-2 mm per pixel, makes the image "
                            "less than 30 mm or more than 400 mm across, or its pixels are more than 4:1 (a unit "
                            "slip or a damaged calibration): distances in pixels only, and "
                            "past 4:1 the angle taken on the stored pixels as square, as scan-converted pixels are"),
}

#: Warnings that put the angle itself in doubt (the masks or the display it was read from), as
#: against those on the HSD, the calibration or the frame's surroundings: an overlay marks the
#: AoP of a frame carrying one, whose number must not look like a good frame's.
ANGLE_IN_DOUBT: frozenset[str] = frozenset({
    "low_confidence", "ps_low_confidence", "orientation_doubtful", "sector_upside_down", "ps_below_head",
    "ps_nearly_round", "ps_thin", "ps_at_black_band", "ps_at_frame_edge", "fh_at_frame_edge", "frame_saturated",
    "marks_over_anatomy", "ps_axis_near_vertical", "aop_out_of_range", "aop_folded", "head_small_in_frame",
    "frame_small",
    "fh_ellipse_poor_fit",
    "ps_fragmented",
    "fh_fragmented",
    "aop_unsteady",
    "ps_touches_head",
    "pixel_aspect_implausible",
})


#: Reasons that only a run that segmented the frame gives (from the network's confidence, the
#: frame's pixels or its regions), which a mask measured alone cannot: ``evaluate`` takes them
#: from the run's records beside its masks.
SEGMENTATION_REASONS: frozenset[str] = frozenset({
    "low_confidence", "ps_low_confidence", "anatomy_unrecognised", "fh_not_seen", "head_small_in_frame", "frame_small",
    "sector_upside_down",
    "ps_at_black_band", "other_view_not_measured", "frame_saturated", "marks_over_anatomy", "frame_dark",
    "aop_unsteady",
})


def angle_in_doubt(reasons) -> bool:
    """Whether ``reasons`` (codes, as a measurement or a row lists them) hold one of
    :data:`ANGLE_IN_DOUBT`: where an AoP is shown, it is then marked "(doubtful)" in words."""
    return not ANGLE_IN_DOUBT.isdisjoint(reasons)


#: Warnings that put the HSD in doubt: those on the masks or the display that doubt the angle
#: (the HSD is taken from the same inferior end, along a line square to the same axis), but
#: not the angle's own range or fold, and the HSD's own instability.
HSD_IN_DOUBT: frozenset[str] = (ANGLE_IN_DOUBT - {"aop_out_of_range", "aop_folded"}) | {"hsd_unstable"}


def distance_in_doubt(reasons) -> bool:
    """Whether ``reasons`` hold one of :data:`HSD_IN_DOUBT`: where an HSD is shown, it is then
    marked "(doubtful)" in words, as a doubted AoP is."""
    return not HSD_IN_DOUBT.isdisjoint(reasons)


#: Warnings on a value (the AoP's range, the HSD's line): a failed measurement, which has no
#: values, does not carry them ("No HSD at this angle; the AoP stands" beside a failed frame).
VALUE_WARNINGS: frozenset[str] = frozenset({"aop_out_of_range", "aop_folded", "hsd_undefined", "hsd_unstable"})


def without_value_warnings(reasons) -> tuple[str, ...]:
    """``reasons`` without :data:`VALUE_WARNINGS`, in their order."""
    return tuple(r for r in reasons if r not in VALUE_WARNINGS)


def failing_reasons_first(reasons) -> tuple[str, ...]:
    """``reasons`` with those that fail a measurement first, each group in its own order: a
    reader of a failed row sees its cause before ``spacing_unknown`` and the other warnings.
    Codes :data:`REASONS` lacks (a file's ``unreadable``) count as failing."""
    reasons = tuple(reasons)
    failing = tuple(r for r in reasons if REASONS.get(r, ("failed",))[0] == "failed")
    return failing + tuple(r for r in reasons if r not in failing)


# What a reader of a row can do about each reason, in plain words (``ipp-seg reasons``).
REASON_ACTIONS: dict[str, str] = {
    "ps_missing": "Check the overlay: is the symphysis in the frame? Re-acquire or choose a frame that shows it.",
    "fh_missing": "Check the overlay: is the fetal head in the frame? Choose a frame that shows it.",
    "ps_too_small": "The symphysis found is a speck: choose a frame where it is clearly seen.",
    "fh_too_small": "The head found is a speck: choose a frame where it is clearly seen.",
    "ps_fit_failed": "The symphysis outline has no usable shape: choose another frame, or measure by hand.",
    "fh_fit_failed": "The head outline has no usable shape: choose another frame, or measure by hand.",
    "tangent_undefined": "The symphysis was drawn inside the head: check the overlay; measure by hand.",
    "aop_impossible": "The frame is probably upside down or turned: check how it is displayed.",
    "ps_round": "The symphysis has no clear long axis here: choose another frame, or measure by hand.",
    "ps_cut_off": "The symphysis runs off the image: choose a frame that shows all of it.",
    "fh_not_seen": "The head is not in view, or hidden: choose a frame (or a depth) that shows the skull.",
    "anatomy_unrecognised": "This does not look like a transperineal scan: check that the right file was given "
                            "(with a model of one's own, it may also be unsure of frames like this one).",
    "fh_cut_off": "The head runs off the image: choose a frame (or a depth) that shows more of it.",
    "ps_fragmented": "Check on the overlay that the orange outline is the symphysis.",
    "fh_fragmented": "Check on the overlay that the blue outline is the fetal head.",
    "fh_ellipse_poor_fit": "Check on the overlay that the blue outline follows the skull.",
    "ps_nearly_round": "The angle may be well off: check the overlay's symphysis axis, or measure by hand.",
    "ps_thin": "Check on the overlay that the orange outline is the whole symphysis, and its axis; or measure by hand.",
    "ps_at_frame_edge": "The symphysis touches the image edge: check the overlay before using the angle.",
    "fh_at_frame_edge": "The head touches the image edge: check the overlay before using the angle.",
    "ps_below_head": "The frame may be upside down: check how it is displayed.",
    "orientation_doubtful": "The frame may be mirrored: if this machine displays it so, run again with "
                            "--orientation mirrored.",
    "ps_touches_head": "The symphysis and the head meet in the masks: check the overlay; the angle may be well off.",
    "ps_axis_near_vertical": "Which end of the symphysis is lower is unclear: check the overlay.",
    "aop_out_of_range": "An unusual angle: check the overlay before using it.",
    "aop_folded": "The angle is past 180°, which the challenge method folds back: measure with --method ellipse "
                  "for the angle itself.",
    "hsd_undefined": "No HSD here (the infrapubic line meets no head); the AoP is still measured.",
    "hsd_unstable": "Use the HSD with care: a small change of angle moves it a lot here.",
    "low_confidence": "The model is unsure of the head: check the overlay before using the values.",
    "ps_low_confidence": "The model is unsure of the symphysis: check the overlay before using the values.",
    "frame_small": "Measure the full-size image, not a thumbnail or a reduced export.",
    "head_small_in_frame": "Crop the image to the ultrasound picture (no margins or text) and run again.",
    "other_view_not_measured": "Only one view was measured: crop the image to the other view to measure it.",
    "frame_saturated": "The image is over-bright: lower the gain, or check the symphysis on the overlay.",
    "frame_dark": "The image is dark (the gain too low?): the overlays of predict and batch show it brightened; "
                  "raise the gain for the next scans.",
    "marks_over_anatomy": "Export the frame without calipers and annotations, or check the PS and head on the "
                          "overlay.",
    "sector_upside_down": "The frame is probably upside down: check how it is displayed.",
    "ps_at_black_band": "Part of the symphysis may be hidden by a black band: check how the image was exported.",
    "aop_unsteady": "The angle jumps against the frames around it: check this frame's overlay and its "
                    "neighbours' before using it.",
    "spacing_unknown": "Distances are in pixels only; give --spacing-mm for files without a calibration.",
    "pixel_aspect_implausible": "Check the file's calibration: the angle assumes square pixels.",
    "spacing_implausible": "The file's calibration looks wrong (distances in pixels only): check how the scanner "
                           "exported it; --spacing-mm does not replace a file's own calibration.",
}

# spacing_implausible's action where the spacing was the user's own --spacing-mm, not the file's (a clinician's pass:
# a value given in cm was met with advice to check the file).
GIVEN_SPACING_IMPLAUSIBLE_ACTION = ("The --spacing-mm given makes the image implausibly large or small: it is "
                                    "millimetres per pixel (a value in cm is ten times too small); check it.")


# Each reason in a few words, as a DICOM code meaning (a Long String: 64 characters at most)
# gives it in an SR; REASONS holds the full meaning.
REASON_TITLES: dict[str, str] = {
    "ps_missing": "no pubic symphysis found",
    "fh_missing": "no fetal head found",
    "ps_too_small": "pubic symphysis too small to measure",
    "fh_too_small": "fetal head too small to measure",
    "ps_fit_failed": "no ellipse fits the pubic symphysis",
    "fh_fit_failed": "no ellipse fits the fetal head",
    "tangent_undefined": "symphysis inferior end inside the head: no tangent",
    "aop_impossible": "angle above 240 degrees: no real angle of progression",
    "ps_round": "pubic symphysis round: no long axis to measure",
    "ps_cut_off": "pubic symphysis cut off by the frame edge",
    "fh_not_seen": "no skull where the head was drawn: head not in view",
    "anatomy_unrecognised": "neither head nor symphysis recognised: no transperineal view",
    "fh_cut_off": "fetal head cut off by the frame edge",
    "ps_fragmented": "pubic symphysis in several large pieces",
    "fh_fragmented": "fetal head in several large pieces",
    "fh_ellipse_poor_fit": "fetal head poorly fitted by an ellipse",
    "ps_nearly_round": "pubic symphysis nearly round: its axis is ill-defined",
    "ps_thin": "pubic symphysis a thin sliver: its ends and axis are unsure",
    "ps_at_frame_edge": "pubic symphysis touches the frame edge",
    "fh_at_frame_edge": "fetal head touches the frame edge",
    "ps_below_head": "pubic symphysis not above the head",
    "orientation_doubtful": "frame may be displayed mirrored from the orientation assumed",
    "ps_touches_head": "pubic symphysis and fetal head drawn touching",
    "ps_axis_near_vertical": "symphysis axis near vertical: inferior end ill-posed",
    "aop_out_of_range": "angle of progression outside 60-200 degrees",
    "aop_folded": "angle past 180 degrees folded back by the challenge method",
    "hsd_undefined": "infrapubic line does not meet the head",
    "hsd_unstable": "infrapubic line grazes the head: HSD unstable",
    "low_confidence": "network unsure of the head it drew",
    "ps_low_confidence": "network unsure of the symphysis it drew",
    "frame_small": "image under 96 pixels: a thumbnail?",
    "head_small_in_frame": "head smaller in the frame than the models learnt",
    "other_view_not_measured": "another view in the frame was not measured",
    "frame_saturated": "frame over-gained: much of the tissue at full brightness",
    "frame_dark": "frame dark: brightest echoes below 32 of 255, under-gained?",
    "marks_over_anatomy": "coloured marks (calipers, lines) drawn over the anatomy",
    "sector_upside_down": "ultrasound sector narrows with depth: frame upside down?",
    "ps_at_black_band": "symphysis against a black band at the image edge",
    "aop_unsteady": "angle over 10 degrees off the cine's frames around it",
    # (An SR reports distances in millimetres only: here, none.)
    "spacing_unknown": "pixel spacing unknown: no distance in millimetres",
    "pixel_aspect_implausible": "pixels over 4:1 in the calibration: angle on the stored grid",
    "spacing_implausible": "pixel spacing implausible: no distance in millimetres",
}

_POINT_FIELDS = (
    ("ps_inferior_end", "ps_inferior"),
    ("ps_superior_end", "ps_superior"),
    ("fh_tangent_point", "fh_tangent"),
    ("hsd_point", "hsd_point"),
    ("shortest_point", "shortest_point"),
)
_ELLIPSE_FIELDS = (("ps_ellipse", "ps_ellipse"), ("fh_ellipse", "fh_ellipse"))


@dataclass(frozen=True)
class Landmarks:
    """Points used by a measurement, (x, y) in pixel coordinates of the input mask (floats).

    Ellipses are OpenCV-style ((cx, cy), (w, h), angle_deg) in pixel coordinates, or None when
    the method used none.
    """

    ps_inferior_end: tuple[float, float] | None = None
    ps_superior_end: tuple[float, float] | None = None
    fh_tangent_point: tuple[float, float] | None = None
    hsd_point: tuple[float, float] | None = None  # where the infrapubic line meets the FH contour
    shortest_point: tuple[float, float] | None = None  # FH contour point nearest the inferior end
    ps_ellipse: tuple | None = None
    fh_ellipse: tuple | None = None

    def to_dict(self) -> dict:
        """Flat dict: ``<name>_x``/``<name>_y`` per point and ``<ellipse>_cx, _cy, _w, _h, _angle``."""
        out: dict = {}
        for attr, key in _POINT_FIELDS:
            pt = getattr(self, attr)
            out[f"{key}_x"] = None if pt is None else float(pt[0])
            out[f"{key}_y"] = None if pt is None else float(pt[1])
        for attr, key in _ELLIPSE_FIELDS:
            e = getattr(self, attr)
            vals = (None,) * 5 if e is None else (e[0][0], e[0][1], e[1][0], e[1][1], e[2])
            for suffix, v in zip(("cx", "cy", "w", "h", "angle"), vals, strict=True):
                out[f"{key}_{suffix}"] = None if v is None else float(v)
        return out


@dataclass(frozen=True)
class Measurement:
    """Angle of progression and head-symphysis distance from one label mask.

    Units: ``aop_deg`` degrees; ``*_mm`` millimetres (None when the spacing is unknown);
    ``*_px`` the same segment's length in pixels of the input mask. ``status`` is "ok",
    "warning" or "failed"; a failed measurement has every value and landmark None (an axis or
    tangent drawn, or given, for a frame that could not be measured would invite reading an
    angle off it), and none of :data:`VALUE_WARNINGS`. ``reasons`` holds codes
    from :data:`REASONS`. ``spacing_mm`` is the (x, y) mm per pixel used, None if unknown;
    ``spacing_source`` says where it came from (one of :data:`SPACING_SOURCES`, None when the
    spacing is unknown or its source was not given).
    """

    aop_deg: float | None
    hsd_mm: float | None
    hsd_px: float | None
    psfh_shortest_px: float | None
    psfh_shortest_mm: float | None
    status: str
    reasons: tuple[str, ...]
    method: str
    orientation: str
    spacing_mm: tuple[float, float] | None
    landmarks: Landmarks
    spacing_source: str | None = None

    def __post_init__(self) -> None:
        if self.status == "failed":
            # As the docstring says, whoever made it: a Measurement a program built failed with an angle had
            # given that angle to the CSV row, the JSON report and the overlay's panel (an output review).
            for name in ("aop_deg", "hsd_mm", "hsd_px", "psfh_shortest_px", "psfh_shortest_mm"):
                object.__setattr__(self, name, None)
            object.__setattr__(self, "landmarks", Landmarks())
            object.__setattr__(self, "reasons", without_value_warnings(self.reasons))  # (on values it has not)

    def with_warning(self, code: str) -> "Measurement":
        """This measurement with the warning ``code`` added (its values kept; a failed
        measurement stays failed)."""
        if REASONS.get(code, ("",))[0] != "warning":
            raise ValueError(f"{code!r} is not a warning reason code")
        status = self.status if self.status == "failed" else "warning"
        return replace(self, reasons=(*self.reasons, code), status=status)

    @property
    def aop_doubtful(self) -> bool | None:
        """Whether a warning puts the AoP in doubt (:func:`angle_in_doubt`); None without an AoP."""
        return None if self.aop_deg is None else angle_in_doubt(self.reasons)

    @property
    def hsd_doubtful(self) -> bool | None:
        """Whether a warning puts the HSD in doubt (:func:`distance_in_doubt`); None without an HSD."""
        return None if self.hsd_px is None else distance_in_doubt(self.reasons)

    def with_failure(self, code: str) -> "Measurement":
        """This measurement failed with ``code`` (a "failed" reason): every value and landmark
        emptied, and the warnings on values it no longer has (:data:`VALUE_WARNINGS`) dropped,
        as a measurement failed by its masks has none."""
        if REASONS.get(code, ("",))[0] != "failed":
            raise ValueError(f"{code!r} is not a failing reason code")
        return replace(self, status="failed", reasons=(code, *self.reasons))  # (emptied as made: __post_init__)

    def to_dict(self) -> dict:
        """Flat JSON-able dict (reasons joined with ";", landmark coordinates flattened)."""
        out = {
            "aop_deg": self.aop_deg,
            "aop_doubtful": self.aop_doubtful,
            "hsd_mm": self.hsd_mm,
            "hsd_doubtful": self.hsd_doubtful,
            "hsd_px": self.hsd_px,
            "psfh_shortest_px": self.psfh_shortest_px,
            "psfh_shortest_mm": self.psfh_shortest_mm,
            "status": self.status,
            "reasons": ";".join(self.reasons),
            "method": self.method,
            "orientation": self.orientation,
            "spacing_x_mm": None if self.spacing_mm is None else float(self.spacing_mm[0]),
            "spacing_y_mm": None if self.spacing_mm is None else float(self.spacing_mm[1]),
            "spacing_source": self.spacing_source,
        }
        out.update(self.landmarks.to_dict())
        return out


def check_spacing(spacing_mm: object) -> tuple[float, float] | None:
    """Validate a user-given (x, y) spacing in mm per pixel; ``None`` passes through. The one
    check of a spacing for the readers, writers, the Predictor and :func:`measure_progress`."""
    if spacing_mm is None:
        return None
    # A string is iterable ("12" would read as 1 x 2 mm), and a bool is a number to float().
    if isinstance(spacing_mm, (str, bytes)) or any(isinstance(v, (bool, np.bool_)) for v in _items(spacing_mm)):
        raise ValueError(f"spacing_mm must be two numbers (x, y) in mm per pixel, got {spacing_mm!r}")
    try:
        sx, sy = (float(v) for v in spacing_mm)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm must be two numbers (x, y) in mm per pixel, got {spacing_mm!r}") from None
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise ValueError(f"spacing_mm must be positive and finite, got {(sx, sy)}")
    return (sx, sy)


def _items(value: object) -> tuple:
    try:
        return tuple(value)  # type: ignore[call-overload]
    except TypeError:
        return ()
