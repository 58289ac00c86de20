"""DICOM results of one measured frame: a Segmentation (SEG) and a Comprehensive SR (TID 1500).

Both reference the source ultrasound image (and its frame, for multi-frame sources) and copy
the patient and study attributes from it, as the IODs require; those are never logged.
highdicom is an optional dependency (``pip install -e '.[dicom]'`` in the clone); it is imported only
when a writer is called.

Codes. The PS segment uses SNOMED CT 82561000 "Symphysis pubis" (category SCT 91723000
"Anatomical Structure"). No standard code for the fetal head as a segmented structure, nor for
the angle of progression or the head-symphysis distance, was found, so those use the private
coding scheme ``99IPPSEG`` (declared in each file's Coding Scheme Identification Sequence):

=============  =========================================================
``FH``         Fetal head (segmented property type)
``AOP``        Angle of progression (UCUM ``deg``)
``HSD``        Head-symphysis distance (UCUM ``mm``)
``STATUS``     Measurement status; values ``ok``, ``warning``, ``failed``
``REASON``     Measurement reason; values the codes of
               :data:`ipp_seg.measure.REASONS`
``METHOD``     (as measurement method) values ``ellipse``, ``challenge``,
               ``contour``
``ORIENT``     Display orientation assumed (which end of the PS is
               inferior); values ``standard``, ``mirrored``
``TTA``        Test-time augmentation; values ``mirror-average``,
               ``none``
``CALIB``      Pixel spacing source (where the HSD's millimetres came
               from); values the codes of
               :data:`ipp_seg.measure.SPACING_SOURCES`
``AOPDOUBT``   Angle of progression in doubt (a warning on the masks or
               the display, as the tables' "(doubtful)"); values SNOMED CT
               373066001 "Yes", 373067005 "No"; only with an AoP
``HSDDOUBT``   Head-symphysis distance in doubt, alike; only with an HSD
=============  =========================================================

Image coordinates in the SR are DICOM SCOORD (column, row) with 0.0\\0.0 at the top-left
corner of the top-left pixel, i.e. the measurement's landmark (x, y) plus 0.5.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import unicodedata
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..errors import IppSegError
from ..measure.result import REASON_TITLES, SPACING_SOURCES, Measurement
from .quiet import every_warning_silenced
from .writers import TTA_SAID, replacing

if TYPE_CHECKING:
    import pydicom

__all__ = [
    "DicomResultError",
    "NO_TRANSPERINEAL_VIEW",
    "HEAD_NOT_SEEN",
    "SEG_REFUSED_FOR",
    "PRIVATE_SCHEME",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "derived_series_uid",
    "write_dicom_seg",
    "write_frame_dicom",
    "write_dicom_sr",
]

logger = logging.getLogger(__name__)

PRIVATE_SCHEME = "99IPPSEG"
SEG_SERIES_NUMBER = 9001  # high numbers keep derived series after the acquired ones
SR_SERIES_NUMBER = 9002
_MANUFACTURER = "ipp-seg"
_MISSING = "DICOM results need highdicom: pip install -e '.[dicom]' in the ipp-seg clone"
_MAX_LO = 64


class DicomResultError(IppSegError, ValueError):
    """A SEG or SR that cannot be made from this source. The message never quotes the source's
    values (they may identify the patient)."""


class DicomOutputsRefused(DicomResultError):
    """The DICOM SEG and/or SR of a frame could not be made; the other outputs were written.

    Attributes:
        refused: (kind, error) for each object not written, kind "SEG" or "SR".
        written: the paths that were written.
    """

    def __init__(self, refused: list[tuple[str, Exception]], written: list):
        self.refused, self.written = refused, written
        if len(refused) == 2 and str(refused[0][1]) == str(refused[1][1]):
            text = f"no DICOM SEG or SR: {refused[0][1]}"
        else:
            text = "; ".join(f"no DICOM {kind}: {exc}" for kind, exc in refused)
        super().__init__(text)


@contextmanager
def _refusals(kind: str):
    """highdicom's errors quote the values it refuses; pass on only what kind of error it was."""
    try:
        yield
    except (DicomResultError, ImportError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - any refusal of the source, named by its class only
        raise DicomResultError(f"highdicom could not make the {kind} from this source's header "
                               f"({type(exc).__name__})") from None


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return highdicom


def require_highdicom() -> None:
    """Raise the ImportError (saying what to install) that the writers would raise, before any work."""
    _highdicom()


def write_dicom_seg(
    source: pydicom.Dataset,
    label_mask: np.ndarray,
    path: str | os.PathLike[str],
    *,
    frame_number: int | None = None,
    model_name: str,
    software_version: str,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    model_sha256: str | None = None,
    tta: bool | None = None,
    series_started: datetime | None = None,
    orientation: str | None = None,
) -> Path:
    """Write a binary DICOM Segmentation of the PS (segment 1) and FH (segment 2).

    Args:
        source: the ultrasound image the mask was predicted on (its pixel data is not needed).
        label_mask: (Rows, Columns) labels 0 background, 1 PS, 2 FH, on the source's pixel grid.
        path: output file; parent folders are created.
        frame_number: 1-based frame of a multi-frame source the mask belongs to; required when
            the source has several frames, None (or 1) for a single-frame one.
        model_name: name of the segmentation model (algorithm name, manufacturer model name).
        software_version: ipp-seg version (algorithm version, software versions).
        series_instance_uid, instance_number: the derived series this object joins and its
            number in it (see :func:`derived_series_uid`); None starts a series of its own.
        model_sha256: the model file's sha256, stored as the algorithm parameter
            ``model_sha256`` (a model's name stays when it is retrained).
        tta: whether the network's output was averaged with the mirrored frame's, stored as the
            algorithm parameter ``tta`` (``mirror-average`` or ``none``; None: not stored). The
            measurement's status and reasons are the SR's: the mask is what the network drew.
        series_started: the Series Date and Time (the run's start, shared by its series; an
            aware datetime, written in the source's time zone); None: now.
        orientation: the display convention the frame was segmented under (``standard``, or
            ``mirrored``: mirrored before the network, which changes the mask), stored as the
            algorithm parameter ``orientation``; None: not stored.

    Returns:
        The path written. Both segments are always stored, an empty one as an empty frame.

    Raises:
        ImportError: highdicom is not installed.
        ValueError: the mask does not fit the source, or the frame number is invalid.
        TypeError: a frame number that is not an integer.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    frame = _check_frame(source, frame_number)
    mask = _check_mask(label_mask, source)
    model_name = _dicom_model_name(model_name)
    label = _source_label(source)
    source = _outside_an_incomplete_frame_of_reference(
        _declaring_lossy_storage(_conforming_source(source, label, "SEG"), source), label)
    with _refusals("Segmentation"):
        family = codes.cid7162.ArtificialIntelligence
        algorithm = hd.AlgorithmIdentificationSequence(name=model_name, family=family, version=software_version,
                                                       parameters=_algorithm_parameters(model_sha256, tta,
                                                                                        orientation) or None)
        category = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
        structures = (
            (1, "pubic symphysis", hd.sr.CodedConcept("82561000", "SCT", "Symphysis pubis")),
            (2, "fetal head", hd.sr.CodedConcept("FH", PRIVATE_SCHEME, "Fetal head")),
        )
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=_tracking_uid(hd, series_instance_uid, label),
                tracking_id=label,
            )
            for number, label, prop in structures
        ]
        # (A single-frame class's source that states its one frame all the same goes through the
        # stand-in too, its reference then without a frame number.)
        stand_in = frame is not None or "NumberOfFrames" in source
        reference = _single_frame_view(source) if stand_in else source
        seg = hd.seg.Segmentation(
            source_images=[reference],
            pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **_new_instance(hd, SEG_SERIES_NUMBER, series_instance_uid, instance_number),
            manufacturer_model_name=model_name,
            software_versions=_lo(software_version),
            device_serial_number=_device_serial_number(model_sha256, software_version),
            content_label="IPP_SEG",
            content_description=_lo(f"PS and FH segmentation by {model_name}"),
            omit_empty_frames=False,
        )
        if stand_in:
            _restore_source_reference(seg, source, frame)
        # Type 2C in General Image for images without Image Plane attributes; highdicom leaves
        # it out for sources without a frame of reference.
        if "PatientOrientation" not in seg:
            seg.PatientOrientation = source.get("PatientOrientation", "")
        seg.SeriesDescription = _series_description("PS and FH segmentation", source, model_name)
        _declare_private_scheme(seg)
        _in_the_sources_time_zone(seg, source, label, series_started)
        return _save(_minimised(seg), path)


def write_dicom_sr(
    source: pydicom.Dataset,
    measurement: Measurement,
    path: str | os.PathLike[str],
    *,
    frame_number: int | None = None,
    model_name: str,
    software_version: str,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    tta: bool | None = None,
    model_sha256: str | None = None,
    series_started: datetime | None = None,
    segmentation: pydicom.Dataset | None = None,
) -> Path:
    """Write a Comprehensive SR (TID 1500 Measurement Report) of one frame's measurement.

    The report holds one measurement group (TID 1501) referencing the source image with:
    AoP in degrees with its three points (PS superior end, inferior end, FH tangent point) as a
    POLYLINE; HSD in millimetres with its two points (inferior end, point on the FH contour) as
    a POLYLINE, only when a millimetre value was measured (never from an unknown spacing); the
    measurement status, each reason code, the display orientation assumed, where the pixel
    spacing came from (when it is known) and (when ``tta`` is given) the test-time augmentation
    as qualitative evaluations, so that the report says how its values were made. A failed
    measurement gives a report with its status and reasons and no values.

    Args:
        source: the ultrasound image the measurement was made on.
        measurement: result of :func:`ipp_seg.measure.measure_progress`, landmarks in pixel
            coordinates of ``source``'s frame.
        path: output file; parent folders are created.
        frame_number: 1-based frame of a multi-frame source; required when it has several.
        model_name: name of the segmentation model (observer device and algorithm name).
        software_version: ipp-seg version.
        series_instance_uid, instance_number: as for :func:`write_dicom_seg`.
        tta: whether the masks came from the frame averaged with its mirror image.
        model_sha256: the model file's sha256, an algorithm parameter ``model_sha256=...``.
        series_started: as for :func:`write_dicom_seg`.
        segmentation: the SEG of the same frame (its header is enough), where one was made: listed
            beside the source among the report's evidence (Current Requested Procedure Evidence),
            so that a reader finds the masks the values were measured on.

    Returns:
        The path written.

    Raises:
        ImportError: highdicom is not installed.
        ValueError: invalid frame number, or a landmark outside the image.
        TypeError: a frame number that is not an integer.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    frame = _check_frame(source, frame_number)
    model_name = _dicom_model_name(model_name)
    label = _source_label(source)
    source = _conforming_source(source, label, "SR")
    with _refusals("SR"):
        sr = hd.sr
        frames = [frame] if frame is not None else None

        def source_for_region():
            return sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frames)

        parameters = _algorithm_parameters(model_sha256)
        algorithm = sr.AlgorithmIdentification(name=model_name, version=_lo(software_version),
                                               parameters=[f"{k}={v}" for k, v in parameters.items()] or None)
        method = sr.CodedConcept(measurement.method, PRIVATE_SCHEME, _lo(f"{measurement.method} method of ipp-seg"))
        lm = measurement.landmarks

        def coded_measurement(code: str, meaning: str, value: float, unit, points):
            return sr.Measurement(
                name=sr.CodedConcept(code, PRIVATE_SCHEME, meaning),
                # To a tenth (of a degree, of a mm), as the tables and overlays show it: a viewer
                # shows a report's value as stored, 15 digits would claim a precision no
                # measurement has (the CSV keeps them all), and a hundredth, 113.15 beside a
                # table's 113.1, read 113.2 in a viewer rounding to one decimal.
                value=round(float(value), 1),
                unit=unit,
                algorithm_id=algorithm,
                method=method,
                referenced_coordinates=_coordinates(sr, points, source, source_for_region),
            )

        measurements = []
        if measurement.aop_deg is not None:
            measurements.append(coded_measurement("AOP", "Angle of progression", measurement.aop_deg, codes.UCUM.Degree,
                                                  (lm.ps_superior_end, lm.ps_inferior_end, lm.fh_tangent_point)))
        if measurement.hsd_mm is not None:
            measurements.append(coded_measurement("HSD", "Head-symphysis distance", measurement.hsd_mm,
                                                  codes.UCUM.Millimeter, (lm.ps_inferior_end, lm.hsd_point)))

        evaluations = [
            sr.QualitativeEvaluation(
                name=sr.CodedConcept("STATUS", PRIVATE_SCHEME, "Measurement status"),
                value=sr.CodedConcept(measurement.status, PRIVATE_SCHEME, f"measurement {measurement.status}"),
            )
        ]
        for reason in measurement.reasons:
            evaluations.append(
                sr.QualitativeEvaluation(
                    name=sr.CodedConcept("REASON", PRIVATE_SCHEME, "Measurement reason"),
                    value=sr.CodedConcept(reason, PRIVATE_SCHEME, _lo(REASON_TITLES.get(reason, reason))),
                )
            )
        if measurement.aop_doubtful is not None:
            # The "(doubtful)" of the tables, machine-readable beside the number: a reader pulling
            # the NUM alone would otherwise take a doubted angle for a sound one.
            evaluations.append(sr.QualitativeEvaluation(
                name=sr.CodedConcept("AOPDOUBT", PRIVATE_SCHEME, "Angle of progression in doubt"),
                value=codes.SCT.Yes if measurement.aop_doubtful else codes.SCT.No,
            ))
        if measurement.hsd_mm is not None:  # (the SR holds an HSD in millimetres only)
            evaluations.append(sr.QualitativeEvaluation(
                name=sr.CodedConcept("HSDDOUBT", PRIVATE_SCHEME, "Head-symphysis distance in doubt"),
                value=codes.SCT.Yes if measurement.hsd_doubtful else codes.SCT.No,
            ))
        # How the values were made: the same frame reads another angle at the other end.
        inferior_side = "right" if measurement.orientation == "standard" else "left"
        evaluations.append(sr.QualitativeEvaluation(
            name=sr.CodedConcept("ORIENT", PRIVATE_SCHEME, "Display orientation assumed"),
            value=sr.CodedConcept(measurement.orientation, PRIVATE_SCHEME,
                                  f"{measurement.orientation}: symphysis inferior end on the {inferior_side}"),
        ))
        if measurement.spacing_source is not None:
            evaluations.append(sr.QualitativeEvaluation(
                name=sr.CodedConcept("CALIB", PRIVATE_SCHEME, "Pixel spacing source"),
                value=sr.CodedConcept(measurement.spacing_source, PRIVATE_SCHEME,
                                      SPACING_SOURCES[measurement.spacing_source]),
            ))
        if tta is not None:
            evaluations.append(sr.QualitativeEvaluation(
                name=sr.CodedConcept("TTA", PRIVATE_SCHEME, "Test-time augmentation"),
                value=sr.CodedConcept("mirror-average", PRIVATE_SCHEME, "output averaged with the mirrored frame's")
                if tta else sr.CodedConcept("none", PRIVATE_SCHEME, "single pass of the network"),
            ))
        group = sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=sr.TrackingIdentifier(uid=_tracking_uid(hd, series_instance_uid, "labour progress"),
                                                      identifier="labour progress"),
            algorithm_id=algorithm,
            measurements=measurements or None,
            qualitative_evaluations=evaluations,
            source_images=[
                sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frames)
            ],
        )
        # The device UID is derived from the model, its weights and the version, so that reports
        # from the same weights share an observer identity and those of other weights (a model of
        # one's own under a shipped model's name, retrained since) do not.
        device = sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[_MANUFACTURER, model_name, software_version, *filter(None, [model_sha256])]),
            name=model_name,
            manufacturer_name=_MANUFACTURER,
            model_name=model_name,
        )
        context = sr.ObservationContext(
            observer_device_context=sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
        )
        report = sr.MeasurementReport(
            observation_context=context,
            procedure_reported=codes.SCT.UltrasoundScanObstetric,
            imaging_measurements=[group],
        )
        document = sr.ComprehensiveSR(
            evidence=[source, *([segmentation] if segmentation is not None else [])],
            content=report,
            **_new_instance(hd, SR_SERIES_NUMBER, series_instance_uid, instance_number),
            is_complete=True,
            is_final=False,
            is_verified=False,
        )
        document.SeriesDescription = _series_description("labour progress", source, model_name)
        # The equipment as the SEG names it (General Equipment, type 3 here): archives and audits of
        # AI results query these, not the content tree.
        document.ManufacturerModelName, document.SoftwareVersions = model_name, _lo(software_version)
        document.DeviceSerialNumber = _device_serial_number(model_sha256, software_version)
        _declare_private_scheme(document)
        _in_the_sources_time_zone(document, source, label, series_started)
        return _save(_minimised(document), path)


# --- helpers -------------------------------------------------------------------------------

# Type 2 attributes of the Patient and General Study modules that the SEG and SR copy from the
# source: they must be present, but may be empty.
_COPIED_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName")
_PATIENT_SEX = ("M", "F", "O")
# What a PACS matches an object's patient by: a source whose own are invalid gets no SEG or SR (left empty, they
# would not match), as they are named in a message.
_PATIENT_IDENTITY = {"PatientID": "Patient ID", "PatientName": "Patient's Name"}


def _tracking_uid(hd, series_instance_uid: str | None, tracked: str) -> str:
    """The Tracking UID of ``tracked`` (a segment's label, or the SR's measurement group) in the
    derived series ``series_instance_uid``: one for every frame of a cine and every image of the
    source series (a new one per frame had told a tracking reader that each frame showed another
    structure); a UID of its own for an object in a series of its own (None)."""
    if series_instance_uid is None:
        return hd.UID()
    from pydicom.uid import generate_uid

    return hd.UID(generate_uid(entropy_srcs=[series_instance_uid, "tracking", tracked]))


def _new_instance(hd, series_number: int, series_instance_uid: str | None, instance_number: int) -> dict:
    """The identity of a new derived object made by ipp-seg: a new instance, in the series
    given (or a series of its own)."""
    return {"series_instance_uid": series_instance_uid or hd.UID(), "series_number": series_number,
            "sop_instance_uid": hd.UID(), "instance_number": int(instance_number), "manufacturer": _MANUFACTURER}


def derived_series_uid(run_uid: str, source, kind: str) -> str:
    """The Series Instance UID that every ``kind`` ("SEG" or "SR") object made from ``source``'s
    series in one run shares: a 120-frame cine gives one SEG series and one SR series, not 240
    series of one object each. Derived from the run's UID, the source's study and series, and
    the kind: an export that gave two studies' images one Series Instance UID (a faulty
    anonymiser) had put two patients' results in one series."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(run_uid), str(source.get("StudyInstanceUID", "")),
                                      str(source.get("SeriesInstanceUID", "")), kind])


NO_TRANSPERINEAL_VIEW = ("the network recognised no transperineal view in the frame (anatomy_unrecognised): a "
                         "segmentation would label other things a head and a symphysis")
HEAD_NOT_SEEN = ("the frame shows no skull where the network drew the head (fh_not_seen): a segmentation would "
                 "label something else a head")
#: The failures whose frame gets no SEG, and why: its labels would name as anatomy what is none.
SEG_REFUSED_FOR: dict[str, str] = {"anatomy_unrecognised": NO_TRANSPERINEAL_VIEW, "fh_not_seen": HEAD_NOT_SEEN}


_REFERENCED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
LEADING_ZEROS_SAID = ("has a part that starts with 0, which DICOM does not allow: its SEGs and SRs repeat it (to join "
                      "its study), and an archive that checks UIDs may refuse them")


def uids_with_leading_zeros(header) -> list[str]:
    """The keywords of ``header``'s UIDs that a SEG or SR repeats or references (study, series,
    instance, frame of reference) with a component that starts with 0 (``1.2.03``): DICOM does
    not allow one, and a validator reports the objects that repeat it as errors, but they must
    repeat it to join their study."""
    return [keyword for keyword in _REFERENCED_UIDS
            if any(len(part) > 1 and part.startswith("0") for part in str(header.get(keyword, "") or "").split("."))]


def uids_with_leading_zeros_in(path: str | os.PathLike[str]) -> list[str]:
    """:func:`uids_with_leading_zeros` of the DICOM file at ``path`` (none where its header cannot
    be read: what writes its SEG or SR says why)."""
    import pydicom

    try:
        return uids_with_leading_zeros(pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                                       specific_tags=list(_REFERENCED_UIDS)))
    except Exception:  # noqa: BLE001 - a header its reader refuses gets no result to warn of
        return []


def instance_numbers(sources: Iterable[tuple[str, str | os.PathLike[str]]],
                     leading_zeros: list[str] | None = None) -> dict[str, int]:
    """The Instance Number of the SEG and SR of each (name, path) DICOM source's first frame in a
    run's derived series (frame n's: that plus n - 1), for every process that writes them alike:
    a source series whose files are single frames with Instance Numbers of their own, none
    repeated, keeps them; in any other (cines, or numbers repeated or missing), its files are
    numbered on in the order of their Instance Numbers (then names), each taking as many numbers
    as it has frames. ``batch`` had numbered each object by its source's number or frame, which
    two cines of a series repeat. Files that are not DICOM, or whose header cannot be read, are
    left out (they get no SEG or SR). ``leading_zeros`` gets the names of the files whose UIDs
    :func:`uids_with_leading_zeros` finds (read in the same pass)."""
    import pydicom

    from .formats import is_dicom_file

    by_series: dict[tuple[str, str], list[tuple[int | None, str, int]]] = {}
    for name, path in sources:
        if not os.path.isfile(path) or not is_dicom_file(path):  # (not a pipe opened to find out)
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                     specific_tags=[*_REFERENCED_UIDS, "InstanceNumber", "NumberOfFrames"])
            frames = int(header.get("NumberOfFrames") or 1)
        except Exception:  # noqa: BLE001 - a header its reader refuses gets no result to number
            continue
        # An empty Instance Number (type 2, zero length: read as None) or one that is no number is a
        # missing one: such a file had been left out of the plan and numbered 1 beside a file of 1.
        try:
            number = int(str(header.get("InstanceNumber") or "").strip() or "0")
        except ValueError:
            number = None
        if leading_zeros is not None and uids_with_leading_zeros(header):
            leading_zeros.append(name)
        key = (str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", "")))
        # (A damaged header's frame count, capped: Instance Numbers stop at 2^31 - 1.)
        frames = max(1, min(frames, 1_000_000))
        by_series.setdefault(key, []).append((number if number and number > 0 else None, name, frames))
    plan: dict[str, int] = {}
    for members in by_series.values():
        numbers = [number for number, _, _ in members]
        if None not in numbers and len(set(numbers)) == len(numbers) and all(n == 1 for _, _, n in members):
            plan.update((name, number) for number, name, _ in members)
            continue
        following = 1
        for _, name, frames in sorted(members, key=lambda m: (m[0] is None, m[0] or 0, m[1])):
            plan[name] = following
            following += frames
    return plan


def instance_number_of(path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """A DICOM object's (Series Instance UID, Instance Number), read from its header alone; None
    for a file without them, or that is no DICOM file."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=["SeriesInstanceUID", "InstanceNumber"])
        return str(header.SeriesInstanceUID), int(header.InstanceNumber)
    except Exception:  # noqa: BLE001 - pydicom's errors, missing elements, a number that is none
        return None


def instance_numbers_clear_of(plan: dict[str, int], sources: Iterable[tuple[str, str | os.PathLike[str]]],
                              written: str | os.PathLike[str], run_uid: str,
                              rewritten: Callable[[str, int], Iterable[Path]] = lambda name, frames: (),
                              earlier_numbers: dict[str, int] | None = None) -> tuple[dict[str, int], int]:
    """``plan`` (:func:`instance_numbers`) with the (name, path) ``sources`` measured now renumbered,
    where their numbers would repeat one that an object already in the folder ``written`` (a resumed
    run's DICOM results) holds in their derived series: after every number of that series, in the
    plan's order. A file added to a series measured before takes its place in the source's order,
    which the objects written before had taken (a coordinator's pass: two SEGs of one series, and
    two SRs, numbered 1 after a resume). ``rewritten(name, frames)``: the paths of the objects a
    source measured now writes, whose earlier objects there it replaces (a file changed since),
    and whose numbers it keeps where they are free; ``earlier_numbers``: those of such objects
    removed already, by absolute path. Returns the plan and how many files were renumbered."""
    import pydicom

    headers: dict[str, tuple[pydicom.Dataset, int]] = {}
    for name, path in sources:
        if name not in plan:
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                     specific_tags=[*_REFERENCED_UIDS, "NumberOfFrames"])
            headers[name] = header, max(1, min(int(header.get("NumberOfFrames") or 1), 1_000_000))
        except Exception:  # noqa: BLE001 - (as instance_numbers: read there, so readable here but for a race)
            continue
    own_paths = {name: {os.path.abspath(path) for path in rewritten(name, frames)}
                 for name, (_, frames) in headers.items()}
    replaced = set().union(*own_paths.values())
    taken: dict[str, set[int]] = {}
    earlier: dict[str, int] = dict(earlier_numbers or {})  # (an object a file measured now writes over: its number)
    for path in Path(written).rglob("*.dcm") if os.path.isdir(written) else ():
        numbered = instance_number_of(path)
        if numbered is None:  # (not one of ours, or damaged: it holds no number to keep clear of)
            continue
        if os.path.abspath(path) in replaced:
            earlier[os.path.abspath(path)] = numbered[1]
        else:
            taken.setdefault(numbered[0], set()).add(numbered[1])
    by_series: dict[tuple[str, str], list[tuple[int, str, int]]] = {}
    used: dict[tuple[str, str], set[int]] = {}
    for name, (header, frames) in headers.items():
        key = (str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", "")))
        by_series.setdefault(key, []).append((plan[name], name, frames))
        used[key] = taken.get(derived_series_uid(run_uid, header, "SEG"), set()) | taken.get(
            derived_series_uid(run_uid, header, "SR"), set())
    plan, renumbered = dict(plan), 0
    for key, members in by_series.items():
        if not used[key]:
            continue
        moving = []
        for first, name, frames in sorted(members):
            # A file measured again (changed since) keeps the number its objects had, where it is still free.
            had = min((earlier[path] for path in own_paths[name] if path in earlier), default=None)
            if had is not None and not used[key].intersection(range(had, had + frames)):
                plan[name] = had
                used[key] |= set(range(had, had + frames))
            else:
                moving.append((first, name, frames))
        following = max(used[key] | {first + frames - 1 for first, _, frames in members}) + 1
        for first, name, frames in moving:
            if used[key].intersection(range(first, first + frames)):
                plan[name], following, renumbered = following, following + frames, renumbered + 1
    return plan, renumbered


def write_frame_dicom(source_path: str | Path, labels: np.ndarray, measurement, out_stem: Path, *,
                      frame_number: int, n_frames: int, seg: bool, sr: bool, model_name: str,
                      model_sha256: str | None, tta: bool, software_version: str, run_uid: str | None = None,
                      run_started=None, numbers_used: dict[str, set[int]] | None = None,
                      instance_number: int | None = None) -> list[Path]:
    """The DICOM SEG (``<out_stem>_seg.dcm``) and/or SR (``<out_stem>_sr.dcm``) of one frame of
    the DICOM file at ``source_path`` (1-based ``frame_number`` of its ``n_frames``); returns the
    paths written, and raises :class:`DicomOutputsRefused` (after writing what it could: a
    source the SEG cannot be made from may still give its SR) naming each one refused.

    ``run_uid`` (one per run) puts the objects of each kind made from one source series in one
    derived series (:func:`derived_series_uid`), numbered by frame for a cine, else by the
    source's Instance Number; ``numbers_used`` (one dict per run, where one process writes the
    whole run) keeps those numbers unique in a series: a later cine of the same series continues
    after the highest; ``instance_number`` (from :func:`instance_numbers`, where several
    processes write a run) is the number to give, in place of both. ``run_started`` (an aware
    datetime) dates the series."""
    import pydicom

    # The header only; force: a data set written without the preamble was read as well.
    source = pydicom.dcmread(source_path, stop_before_pixels=True, force=True)
    instance = 1
    if instance_number is not None:
        instance = instance_number
    elif run_uid is not None:
        instance = frame_number if n_frames > 1 else _positive_or_one(source.get("InstanceNumber"))
        if numbers_used is not None:
            used = numbers_used.setdefault(f'{source.get("StudyInstanceUID", "")}/'
                                           f'{source.get("SeriesInstanceUID", "")}', set())
            if instance in used:
                instance = max(used) + 1
            used.add(instance)

    def series(kind: str) -> str | None:
        return derived_series_uid(run_uid, source, kind) if run_uid is not None else None

    written, refused = [], []
    refusing = [SEG_REFUSED_FOR[code] for code in getattr(measurement, "reasons", ()) if code in SEG_REFUSED_FOR]
    if seg and refusing:
        # A segmentation of a frame that shows no transperineal view (a report's screen capture), or
        # no head where one was drawn, would label other things anatomy in the patient's record. Its
        # SR stands: it says the measurement failed, and why.
        refused.append(("SEG", DicomResultError(refusing[0])))
        seg = False
    common = dict(frame_number=frame_number, model_name=model_name, software_version=software_version,
                  instance_number=instance, model_sha256=model_sha256 or None, tta=tta, series_started=run_started)
    for kind, wanted, write, content in (("SEG", seg, write_dicom_seg, labels),
                                         ("SR", sr, write_dicom_sr, measurement)):
        if wanted:
            try:
                # The SEG names the display convention the frame was segmented under (mirrored
                # first, it changes the mask); the SR says it among its measurement's terms, and
                # names the SEG written beside it among its evidence.
                own = {"orientation": getattr(measurement, "orientation", None)} if kind == "SEG" else {
                    "segmentation": pydicom.dcmread(written[0], stop_before_pixels=True) if written else None}
                written.append(write(source, content, Path(f"{out_stem}_{kind.lower()}.dcm"),
                                     series_instance_uid=series(kind), **common, **own))
            except DicomResultError as exc:
                refused.append((kind, exc))
    if refused:
        raise DicomOutputsRefused(refused, written)
    return written


def _positive_or_one(value) -> int:
    """An Instance Number when it is a positive integer, else 1."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


# Study attributes the derived objects copy (besides the whole Patient group, 0010).
_COPIED_STUDY = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
                 "StudyDescription")
# Value representations whose values pydicom can check against the standard.
_CHECKED_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT")
# Those whose text is written in the Specific Character Set (the others hold ASCII only).
_TEXT_VRS = ("LO", "LT", "PN", "SH", "ST", "UC", "UT")


def _source_label(source) -> str:
    """The source's file as the caller named it, for warnings (a run writes many SEGs and SRs);
    "the source" for a dataset not read from a named file."""
    name = getattr(source, "filename", None)
    return os.fspath(name) if isinstance(name, (str, os.PathLike)) and os.fspath(name) else "the source"


def _read_as_latin1(charsets) -> bool:
    """Whether pydicom decodes text under ``charsets`` with its default, Latin-1: none declared,
    the default repertoire, or a term it does not know."""
    from pydicom.charset import convert_encodings, default_encoding

    with every_warning_silenced():  # pydicom's warning on an unknown term
        try:
            return convert_encodings(charsets) == [default_encoding]
        except (LookupError, ValueError):  # refused outright (strict reading): nothing decoded as Latin-1
            return False


def _as_utf8_if_valid(text: str) -> str:
    """``text`` decoded as Latin-1, re-read as UTF-8 where its bytes are valid UTF-8 (which
    Latin-1 text almost never is); otherwise as it was."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:  # Latin-1 after all, or set in memory beyond Latin-1
        return text


# Optional (type 3) patient attributes a derived object need not repeat: copied, they would
# spread a patient's other names and free-text comments to every SEG and SR.
_NOT_REPEATED = ("OtherPatientNames", "OtherPatientIDs", "OtherPatientIDsSequence", "PatientComments",
                 "PatientBirthName", "PatientMotherBirthName", "MedicalAlerts", "Allergies", "EthnicGroup",
                 "PatientReligiousPreference", "PatientAddress", "PatientTelephoneNumbers")


def _minimised(ds):
    """``ds`` without :data:`_NOT_REPEATED` (what the IOD requires is kept)."""
    from pydicom.datadict import tag_for_keyword

    for keyword in _NOT_REPEATED:
        tag = tag_for_keyword(keyword)
        if tag is not None and tag in ds:
            del ds[tag]
    return ds


def _standard_vr(tag, vr: str) -> str:
    """The VR the data dictionary gives ``tag`` (one VR only), else ``vr`` as stored."""
    from pydicom.datadict import dictionary_VR

    try:
        standard = dictionary_VR(tag)
    except KeyError:  # a private or unknown tag
        return vr
    return standard if " " not in standard else vr


def _conforming_source(source, label: str = "the source", kind: str = "derived object"):
    """A copy of ``source`` whose copied patient and study attributes meet the standard; the
    caller's dataset is left as it is (the copy holds its own element dictionary, and an
    element it changes is replaced, never written into).

    Scanners, RIS and anonymisers write birth dates as 1980-02-14, sex as U, ages as free text,
    accession numbers longer than 16 characters, or leave type 2 attributes out; highdicom
    refuses such a source (its error would quote the value), or copies it into an object a
    PACS may reject. Here an invalid or missing value becomes an empty one, as type 2 allows,
    and only the attribute's name is logged, with ``label`` (the source's file) and ``kind``
    (the object made). Dates and times are checked wherever they are. Devices often write UTF-8
    without declaring a character set: text read as Latin-1 for want of one is taken as UTF-8
    where its bytes are valid UTF-8."""
    from pydicom import config
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.valuerep import validate_value

    fixed = Dataset()
    for element in source:
        fixed.add(element)
    if getattr(source, "file_meta", None) is not None:
        fixed.file_meta = source.file_meta

    def put(keyword: str, value) -> None:
        tag = fixed[keyword].tag if keyword in fixed else None
        if tag is None:
            setattr(fixed, keyword, value)  # a new element of its own
        else:
            fixed[tag] = DataElement(tag, fixed[tag].VR, value)

    blanked, left_out = [], []
    identity_blanked: list[tuple[str, str]] = []  # the source's own Patient ID or Patient's Name, invalid, and why
    non_ascii = reread_utf8 = False
    declared = source.get("SpecificCharacterSet")
    # ESC introduces a code extension only under ISO 2022; elsewhere it is a terminal's control character.
    escapes = any("2022" in str(term) for term in ([declared] if isinstance(declared, str) else declared or []))

    def conform(dataset, every_element: bool, latin1: bool) -> None:
        """Check the copied elements of ``dataset`` (every one, inside a copied sequence);
        ``latin1``: its text was decoded as Latin-1 for want of a known character set."""
        nonlocal non_ascii, reread_utf8
        if dataset is not fixed and "SpecificCharacterSet" in dataset:  # an item's own
            latin1 = _read_as_latin1(dataset.SpecificCharacterSet)
        for element in list(dataset):
            if not (every_element or _is_copied(element)):
                continue
            if element.VR == "SQ":
                if dataset is fixed:  # items of its own: the caller's sequence stays as it was
                    element = fixed[element.tag] = copy.deepcopy(element)
                for item in element.value:
                    conform(item, True, latin1)  # reading each value also decodes it, for writing in another set
                continue
            if element.VR not in _CHECKED_VRS or element.value in (None, ""):
                continue
            values = element.value if element.VM > 1 else [element.value]
            if latin1 and element.VR in _TEXT_VRS:
                as_utf8 = [_as_utf8_if_valid(str(value)) for value in values]
                if as_utf8 != [str(value) for value in values]:
                    values, reread_utf8 = as_utf8, True
                    element = dataset[element.tag] = DataElement(element.tag, element.VR,
                                                                 as_utf8 if element.VM > 1 else as_utf8[0])
            cause = "several values"  # (what is wrong, for a refusal: said in ipp-seg's words, never the value's)
            try:
                if element.VM > 1 and _single_valued(element.tag):
                    raise ValueError(cause)  # e.g. a name with a backslash
                for value in values:
                    # As text (a DSfloat or PersonName too): pydicom's checks take the written form.
                    text = str(value)
                    cause = "too long, or a character its kind of value does not allow"  # (pydicom's words quote it)
                    validate_value(element.VR, text, config.RAISE)
                    cause = "no such date or time"
                    _check_calendar(element.VR, text)
                    broken = [said for said, found in (
                        ("a control character", _has_control_characters(element.VR, text, escapes)),
                        ("more name parts or groups than a name holds",
                         element.VR == "PN" and _too_many_name_parts(text)),
                        # Bytes its declared character set does not hold (Latin-1 under ISO_IR 192): pydicom
                        # put U+FFFD in their place, and a name had reached the SEG and SR so damaged.
                        ("bytes its declared character set does not hold",
                         element.VR in _TEXT_VRS and "\ufffd" in text)) if found]
                    if broken:
                        cause = broken[0]
                        raise ValueError(cause)
                    non_ascii |= not text.isascii()
            except (TypeError, ValueError):
                if dataset is fixed and element.keyword not in _COPIED_TYPE_2 and element.tag.group != 0x0012:
                    # Optional (type 3) in the SEG and SR: left out, as an empty Study Description under the
                    # study's UID would be one more value a PACS or RIS compares with (or takes as the newest).
                    del dataset[element.tag]
                    left_out.append(element.keyword or str(element.tag))
                    continue
                # Emptied under the VR the standard gives it: a name stored as a date stays a name.
                dataset[element.tag] = DataElement(element.tag, _standard_vr(element.tag, element.VR), "")
                blanked.append(element.keyword or str(element.tag))
                if dataset is fixed and element.keyword in _PATIENT_IDENTITY:
                    identity_blanked.append((element.keyword, cause))

    conform(fixed, False, _read_as_latin1(source.get("SpecificCharacterSet")))
    if reread_utf8:
        logger.info("text of %s in no known character set is valid UTF-8: read as UTF-8", label)
    if str(fixed.get("PatientSex", "") or "") not in ("", *_PATIENT_SEX):
        put("PatientSex", "")
        blanked.append("PatientSex")
    charsets = fixed.get("SpecificCharacterSet")
    terms = [] if charsets is None else [charsets] if isinstance(charsets, str) else list(charsets)
    # highdicom refuses a single ISO 2022 term, valid as "ISO 2022 IR 100" is: code extensions
    # need several.
    unwritable = any(term and term not in _character_sets_written() for term in terms) or (
        len(terms) == 1 and terms[0].startswith("ISO 2022"))
    if unwritable or (non_ascii and not any(terms)):
        # A character set DICOM does not define (or highdicom does not write, such as ISO_IR 6 or
        # Korean ISO 2022 IR 149), or none declared for text that is not ASCII: the text as
        # pydicom decoded it is written as UTF-8, which any reader decodes, rather than an object
        # declaring what it does not hold (highdicom refuses the former outright).
        if non_ascii:
            put("SpecificCharacterSet", "ISO_IR 192")
            logger.warning("%s %s; its text is written as UTF-8 (ISO_IR 192) in its %s", label,
                           "holds text that is not ASCII but declares no character set" if not any(terms)
                           else "declares a character set that a derived object cannot", kind)
        else:  # ASCII text under, say, ISO_IR 6: the default repertoire holds it, nothing to declare
            del fixed.SpecificCharacterSet
            logger.info("%s declares a character set that a derived object cannot; its text is ASCII", label)
    elif len(terms) > 1 and not terms[0]:
        # An empty first value means ISO 2022 IR 6 (with code extensions); highdicom needs it named.
        put("SpecificCharacterSet", ["ISO 2022 IR 6", *terms[1:]])
    for keyword in _COPIED_TYPE_2:
        if keyword not in fixed:
            put(keyword, "")
    if identity_blanked:  # the source's own (an Other Patient IDs item's is blanked as any other)
        # Left empty under the source's Study Instance UID, it would not match its patient: a PACS
        # quarantines such an object, or files it under a patient of its own, or (one that keeps the
        # newest demographics) empties the patient's name it holds.
        named = " and ".join(_PATIENT_IDENTITY[keyword] for keyword, _ in identity_blanked)
        why = "; ".join(cause for _, cause in identity_blanked)
        raise DicomResultError(f"the {named} of {label} {'is' if len(identity_blanked) == 1 else 'are'} not valid "
                               f"DICOM ({why}): a result without it would not match its patient in a PACS, so none "
                               f"is made; correct the source's {named}")
    for attributes, done in ((blanked, "left empty in"), (left_out, "left out of")):
        if attributes:
            logger.warning("%s of %s %s not valid DICOM; %s its %s", ", ".join(attributes), label,
                           "is" if len(attributes) == 1 else "are", done, kind)
    if not str(source.get("PatientID", "") or "").strip():
        # Legal (type 2), and made as the source is; but said, as an invalid one is refused: a PACS
        # files such an object by its Study Instance UID alone, or quarantines it.
        logger.warning("%s has no Patient ID, so its %s has none either: a PACS may not match it to its patient "
                       "(it goes by the Study Instance UID alone, or quarantines it)", label, kind)
    return fixed


# What highdicom copies from the source into a SEG or SR besides the Patient group (0010): the
# clinical trial subject and study (0012), visit (0038) and these study attributes; every
# date and time is checked wherever it is.
_COPIED_GROUPS = (0x0010, 0x0012, 0x0038)
_COPIED_KEYWORDS = frozenset({*_COPIED_STUDY, "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
                              "ConsultingPhysicianName", "AdmittingDiagnosesDescription", "RequestingService",
                              # the study's sequences highdicom copies too (their items' text is checked)
                              "ProcedureCodeSequence", "ReferringPhysicianIdentificationSequence",
                              "PhysiciansOfRecordIdentificationSequence",
                              "PhysiciansReadingStudyIdentificationSequence",
                              "ConsultingPhysicianIdentificationSequence", "ReferencedStudySequence"})


def _is_copied(element) -> bool:
    return (element.tag.group in _COPIED_GROUPS or element.keyword in _COPIED_KEYWORDS
            or element.VR in ("DA", "TM", "DT"))


def _declaring_lossy_storage(conformed, source):
    """``conformed`` (:func:`_conforming_source`'s copy of ``source``) saying Lossy Image
    Compression 01 and its method where ``source`` is stored lossily without saying so (an archive
    that compresses on ingest): highdicom takes a SEG's flag from its source, and had written 00,
    never compressed lossily, of a mask drawn on JPEG pixels. An element is added anew, never
    written into (the copy shares the caller's)."""
    syntax = str(getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", "") or "")
    method = _LOSSY_SYNTAXES.get(syntax)
    if method is None and syntax in _JPEG2000_SYNTAXES and _irreversible_wavelet(getattr(source, "filename", None)):
        method = _JPEG2000_SYNTAXES[syntax]
    if method is not None and str(conformed.get("LossyImageCompression", "") or "") != "01":
        conformed.add_new("LossyImageCompression", "CS", "01")
        conformed.add_new("LossyImageCompressionMethod", "CS", method)
    return conformed


# Transfer syntaxes that are lossy whatever their encoder's settings, and the Lossy Image
# Compression Method each means (JPEG 2000 and JPEG XL may be lossless: not listed).
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG baseline, extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.100": "ISO_13818_2", "1.2.840.10008.1.2.4.101": "ISO_13818_2",  # MPEG-2
    **{f"1.2.840.10008.1.2.4.{n}": "ISO_14496_10" for n in range(102, 107)},  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.107": "ISO_23008_2", "1.2.840.10008.1.2.4.108": "ISO_23008_2",  # HEVC/H.265
    "1.2.840.10008.1.2.4.111": "ISO_10918_1",  # JPEG XL recompressing a (lossy) JPEG
}


# JPEG 2000 and HTJ2K syntaxes that may hold either coding: lossy where the codestream's wavelet
# is the irreversible 9-7 one (a reversible 5-3 codestream may still have been truncated: not said).
_JPEG2000_SYNTAXES = {"1.2.840.10008.1.2.4.91": "ISO_15444_1", "1.2.840.10008.1.2.4.93": "ISO_15444_2",
                      "1.2.840.10008.1.2.4.203": "ISO_15444_15"}
_CODESTREAM_HEAD_BYTES = 8 << 20  # the first frame's main header lies near the start of the pixel data


def _irreversible_wavelet(path) -> bool:
    """Whether the first JPEG 2000 codestream in the file at ``path`` codes with the irreversible
    9-7 wavelet (its COD segment's transformation 0), which is lossy; False where it cannot be
    read or told. Read once per file (and its size and time): a cine's SEGs ask for each frame."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return _irreversible_wavelet_of(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _irreversible_wavelet_of(path: str, size: int, mtime_ns: int) -> bool:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_CODESTREAM_HEAD_BYTES)
    except OSError:
        return False
    at = data.find(b"\xff\x4f\xff\x51")  # SOC, then SIZ: a codestream's start
    if at < 0:
        return False
    at += 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0x52:  # COD: Lcod, Scod, SGcod (4 bytes), then levels, code-block sizes and style, transform
            return at + 13 < len(data) and data[at + 13] == 0
        if marker in (0x90, 0x93) or length < 2:  # SOT or SOD: the main header ended without a COD
            return False
        at += 2 + length
    return False


def _check_calendar(vr: str, text: str) -> None:
    """Raise ValueError for a date or time of the right form that does not exist (29 February
    1990, 31 April, minute 60): pydicom checks the form only, and highdicom, which reads the
    value, had then refused the SEG and the SR both."""
    from pydicom.valuerep import DA, DT, TM

    parse = {"DA": DA, "DT": DT, "TM": TM}.get(vr)
    if parse is not None:
        with every_warning_silenced():  # (pydicom warns of a leap second, which DICOM allows, and reads it)
            parse(text)


def _too_many_name_parts(text: str) -> bool:
    """A person name has at most five components (four ^) in each of its three groups (=)."""
    return any(group.count("^") > 4 for group in text.split("="))


def _character_sets_written() -> set[str]:
    """The Specific Character Set terms highdicom writes (pydicom reads a few more)."""
    from pydicom.charset import python_encoding

    try:
        from highdicom.enum import SpecificCharacterSetValues
    except ImportError:
        return set(python_encoding)
    return {value.value for value in SpecificCharacterSetValues} & set(python_encoding)


def _single_valued(tag) -> bool:
    """Whether the standard allows ``tag`` one value only (False for a private tag, or a public
    one this pydicom does not know)."""
    from pydicom.datadict import dictionary_VM

    if tag.is_private:
        return False
    try:
        return dictionary_VM(tag) == "1"
    except KeyError:
        return False


# Text value representations that may hold line breaks (PS3.5 6.2); the others hold no control
# character but ESC, which ISO 2022 code extensions use.
_MULTILINE_VRS = ("LT", "ST", "UT")


def _has_control_characters(vr: str, text: str, escapes: bool = True) -> bool:
    """Whether ``text`` of a ``vr`` element holds a control character its VR does not allow; ESC
    counts as one unless ``escapes`` (the data set declares ISO 2022 code extensions)."""
    allowed = ("\t\n\x0c\r" if vr in _MULTILINE_VRS else "") + ("\x1b" if escapes else "")
    return any((ord(c) < 0x20 or c == "\x7f") and c not in allowed for c in text)


_FRAME_OF_REFERENCE = ("FrameOfReferenceUID", "PositionReferenceIndicator", "ImagePositionPatient",
                       "ImageOrientationPatient")


def _outside_an_incomplete_frame_of_reference(source, label: str = "the source"):
    """``source`` (a copy of its own, from :func:`_conforming_source`) without its Frame of
    Reference where a SEG in it could not be valid: no Slice Thickness beside Pixel Spacing
    (absent, or empty as type 2 allows; the Pixel Measures macro needs it, a 2-D ultrasound
    image does not have one, and ipp-seg does not invent it), or a frame of reference that is
    not whole (an empty UID, a position without an orientation or the reverse, a thickness that
    is not one positive number). The SEG is then made as for a source without a frame of
    reference: on the same pixel grid, referencing the source image."""
    if "SliceThickness" in source and not source.get("SliceThickness"):
        # Empty, as type 2 allows in an ultrasound image; highdicom would copy it into the Pixel
        # Measures macro, where it may be absent but never empty.
        del source.SliceThickness
    if "FrameOfReferenceUID" not in source:
        return source
    try:
        thickness_ok = "SliceThickness" not in source or float(source.SliceThickness) > 0
    except (TypeError, ValueError):  # several values, or not a number
        thickness_ok = False
    whole = (bool(source.get("FrameOfReferenceUID")) and thickness_ok
             and ("ImagePositionPatient" in source) == ("ImageOrientationPatient" in source)
             and not ("PixelSpacing" in source and "SliceThickness" not in source))
    if not whole:
        for keyword in (*_FRAME_OF_REFERENCE, "SliceThickness"):
            if keyword in source:
                delattr(source, keyword)
        logger.info("%s: its frame of reference is not whole enough for a SEG in it (no Slice Thickness beside its "
                    "Pixel Spacing, or a part missing): the SEG is made outside it", label)
    return source


def _n_frames(source) -> int:
    try:
        return int(source.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


# Storage classes (PS3.4 B.5) whose images may hold several frames, and single-frame ones that
# ultrasound exports use: references to a frame (Referenced Frame Number) are for the former only.
_MULTIFRAME_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
    "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Secondary Capture (four kinds)
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4"})
_SINGLE_FRAME_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.7"})  # Secondary Capture Image Storage


def _is_multiframe_iod(source) -> bool:
    """Whether the source's SOP class is of a multi-frame IOD; for a class not listed here, whether
    it states a number of frames. A single-frame class's image that states one all the same
    (Number of Frames 1, as some exports add) is single-frame: a reference to its frame 1 is
    not conformant (dciodvfy: "shall not be present")."""
    uid = str(source.get("SOPClassUID", ""))
    if uid in _MULTIFRAME_CLASSES or uid in _SINGLE_FRAME_CLASSES:
        return uid in _MULTIFRAME_CLASSES
    return "NumberOfFrames" in source


# Retired ultrasound storage classes (PS3.6 A.1): older archives hold them; highdicom cannot
# reference them.
_RETIRED_ULTRASOUND = {"1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
                       "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)"}


def _check_frame(source, frame_number: int | None) -> int | None:
    """Validated 1-based frame to reference, or None for a single-frame source."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in source:
            raise DicomResultError(f"source dataset lacks {keyword}")
    from .dicom import valid_uid

    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        # Not quoted: a damaged header may hold any text there (a patient's name had been copied
        # into a SEG and SR as their Study Instance UID).
        if valid_uid(source.get(keyword)) is None:
            raise DicomResultError(f"the source's {keyword} is no valid UID (digits and dots, at most 64)")
    retired = _RETIRED_ULTRASOUND.get(str(source.SOPClassUID))
    if retired:
        raise DicomResultError(f"the source is stored with the retired SOP class {retired}, which a SEG or SR "
                               "cannot reference; have the archive convert it to the current ultrasound class")
    n = _n_frames(source)
    if not _is_multiframe_iod(source):
        if n > 1:  # a cine stored under a single-frame class: no reference can say which frame, the first either
            raise DicomResultError(f"the source holds {n} frames under a single-frame SOP class "
                                   f"({source.SOPClassUID}): a SEG or SR cannot reference one of them")
        if frame_number not in (None, 1):
            raise DicomResultError(f"frame_number {frame_number} given for a single-frame source")
        return None
    if frame_number is None:
        if n > 1:
            raise DicomResultError(f"the source has {n} frames: frame_number (1-based) is required")
        return 1
    if not isinstance(frame_number, (int, np.integer)) or isinstance(frame_number, bool):
        raise TypeError(f"frame_number must be an integer, got {frame_number!r}")
    if not 1 <= int(frame_number) <= n:
        raise DicomResultError(f"frame_number {frame_number} outside 1..{n}")
    return int(frame_number)


def _check_mask(label_mask, source) -> np.ndarray:
    mask = np.asarray(label_mask)
    if mask.ndim != 2:
        raise DicomResultError(f"label mask must be 2-D (Rows, Columns), got shape {mask.shape}")
    if mask.shape != (int(source.Rows), int(source.Columns)):
        raise DicomResultError(f"label mask shape {mask.shape} differs from the source's {(source.Rows, source.Columns)}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise DicomResultError(f"label mask must hold integers, got {mask.dtype}")
    unexpected = sorted(set(np.unique(mask).tolist()) - {0, 1, 2})
    if unexpected:
        raise DicomResultError(f"label mask values must be 0, 1 or 2; found {unexpected[:5]}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _single_frame_view(source):
    """A shallow copy of a multi-frame source that highdicom accepts as a single frame.

    highdicom 0.28 takes every source of a multi-frame IOD (e.g. Ultrasound Multi-frame Image)
    for an enhanced one with functional groups, and refuses several frames without a frame
    of reference. The SEG is built against this stand-in and its references are then pointed
    back at the real instance and frame by :func:`_restore_source_reference`.
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import UltrasoundImageStorage

    # A new dataset holding the same elements: copy.copy would share the element dict, and
    # assigning to a shared element would change the caller's dataset.
    view = Dataset()
    for element in source:
        if element.keyword not in ("NumberOfFrames", "FrameIncrementPointer", "PixelData", "SOPClassUID"):
            view.add(element)
    view.SOPClassUID = UltrasoundImageStorage
    return view


def _restore_source_reference(ds, source, frame: int | None) -> None:
    """Point every reference to the stand-in at the real SOP class and, in derivation, frame
    (none for a single-frame source)."""

    def walk(item, in_source_image_seq: bool) -> None:
        if item.get("ReferencedSOPInstanceUID") == source.SOPInstanceUID:
            item.ReferencedSOPClassUID = source.SOPClassUID
            if in_source_image_seq and frame is not None:
                item.ReferencedFrameNumber = frame
        for element in item:
            if element.VR != "SQ":
                continue
            is_source_seq = element.keyword == "SourceImageSequence"
            if is_source_seq:
                # highdicom may share one item between this and the Referenced Instance
                # Sequence, whose SOP Instance Reference macro has no frame number.
                element.value = [copy.deepcopy(child) for child in element.value]
            for child in element.value:
                walk(child, is_source_seq)

    walk(ds, False)


def _coordinates(sr, points, source, source_for_region):
    """SCOORD POLYLINE through the given landmarks, or None when one of them is missing or lies
    outside the image. A fitted ellipse's tangent point or axis end can fall beyond the frame
    when the head or symphysis reaches its edge (flagged in the measurement's reasons); a
    SCOORD holds image coordinates, so that value goes without its outline, not without the SR."""
    if any(p is None for p in points):
        return None
    data = np.array([[float(p[0]) + 0.5, float(p[1]) + 0.5] for p in points], dtype=np.float64)
    cols, rows = float(source.Columns), float(source.Rows)
    if not np.isfinite(data).all() or np.any(data < 0) or np.any(data[:, 0] > cols) or np.any(data[:, 1] > rows):
        logger.info("a landmark lies outside the source image: its measurement is stored without its outline")
        return None
    return [sr.CoordinatesForMeasurement(graphic_type="POLYLINE", graphic_data=data, source_image=source_for_region())]


def _declare_private_scheme(ds) -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "ipp-seg private codes"
    item.CodingSchemeResponsibleOrganization = "ipp-seg project"
    existing = [i for i in ds.get("CodingSchemeIdentificationSequence", []) if i.CodingSchemeDesignator != PRIVATE_SCHEME]
    ds.CodingSchemeIdentificationSequence = [*existing, item]


def _algorithm_parameters(model_sha256: str | None, tta: bool | None = None,
                          orientation: str | None = None) -> dict[str, str]:
    """The algorithm parameters a SEG or SR records: the model file's checksum, when known, and
    (a SEG's) whether the output was averaged with the mirrored frame's and the display
    convention the frame was segmented under, when said: each changes the mask."""
    parameters = {"model_sha256": model_sha256} if model_sha256 else {}
    if tta is not None:
        parameters["tta"] = TTA_SAID[bool(tta)]
    if orientation is not None:
        parameters["orientation"] = orientation
    return parameters


def _device_serial_number(model_sha256: str | None, software_version: str) -> str:
    """What tells one "device" ipp-seg is from another: the model file's sha256 (64 hex digits, as
    many as a LO value holds), else the version of the software (a placeholder such as "none"
    would read as a real serial number)."""
    return _lo(model_sha256 or f"ipp-seg {software_version}")


def _series_description(what: str, source, model_name: str) -> str:
    """``what`` of the source's series (by its Series Number, where it has one) and the model: a
    study browser lists one derived series per source series and kind, all numbered 9001 (or
    9002), and had shown them with one description. It begins ``Research use:``, what a PACS
    viewer shows of the series (a QA auditor's pass: nothing in a SEG or SR pushed to a PACS had
    said that a research tool made it)."""
    number = str(source.get("SeriesNumber", "") or "").strip()
    of_series = f" of series {number}" if re.fullmatch(r"[+-]?[0-9]{1,12}", number) else ""
    return _lo(f"Research use: {what}{of_series} ({model_name})")


def _dicom_model_name(name: str) -> str:
    """A model's name as the SEG and SR write it (algorithm, device, series description): in ASCII,
    which every character set holds (accents dropped, other letters and control characters as
    ``_``; a model file named modèle had put bytes of no declared set into the objects), without a
    backslash, which DICOM reads as a second value, and at most 64 characters (LO; the SEG's
    Algorithm Name had kept a longer one)."""
    decomposed = unicodedata.normalize("NFKD", str(name))
    kept = "".join(ch if " " <= ch <= "~" and ch != "\\" else "_" for ch in decomposed
                   if not unicodedata.combining(ch))
    return _lo(kept.strip() or "model")


def _lo(text: str) -> str:
    """Trimmed to the 64 characters a LO value holds."""
    text = str(text)
    return text if len(text) <= _MAX_LO else text[: _MAX_LO - 3] + "..."


def _in_the_sources_time_zone(ds, source, label: str = "the source",
                              series_started: datetime | None = None) -> None:
    """Write the object's own dates and times (its creation and content, the contribution of its
    equipment) in the source's time zone, and say so, where the source states one (Timezone
    Offset From UTC): the object copies the source's Study Date and Time, which are in that zone,
    and one offset covers every date and time of an instance. A source that states none, or an
    offset that is no ``+HHMM`` / ``-HHMM``, leaves the object in this machine's local time.
    Series Date and Time are ``series_started`` (the run's start, shared by the objects of its
    series; now where not given): a run that measures a scan again makes a series of its own,
    which a PACS then lists with its own date and time."""
    offset = str(source.get("TimezoneOffsetFromUTC", "") or "").strip()
    match = re.fullmatch(r"([+-])(\d\d)(\d\d)", offset)
    zone = None
    if match and int(match[2]) <= 14 and int(match[3]) <= 59:
        sign = 1 if match[1] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))
    elif offset:
        logger.warning("the Timezone Offset From UTC of %s is not +HHMM or -HHMM: left out", label)
    started = series_started if series_started is not None else datetime.now(timezone.utc)
    started = started.astimezone(zone) if zone is not None else started.astimezone()
    ds.SeriesDate, ds.SeriesTime = started.strftime("%Y%m%d"), started.strftime("%H%M%S")
    if zone is None:
        return
    now = datetime.now(zone)
    ds.TimezoneOffsetFromUTC = offset
    for prefix in ("InstanceCreation", "Content"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", now.strftime("%Y%m%d"))
            setattr(ds, f"{prefix}Time", now.strftime("%H%M%S.%f"))
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S.%f")


def _save(ds, path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target) as fh:
        ds.save_as(fh, enforce_file_format=True)
    logger.debug("wrote %s", target)
    return target
