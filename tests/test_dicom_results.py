"""ipp_seg.io.dicom_results: DICOM SEG and Comprehensive SR (TID 1500) of a measured frame."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from ipp_seg.io.dicom_results import PRIVATE_SCHEME, DicomResultError, write_dicom_seg, write_dicom_sr
from ipp_seg.measure import REASONS, measure_progress
from ipp_seg.measure.result import REASON_TITLES, SPACING_SOURCES

hd = pytest.importorskip("highdicom", reason="highdicom (the 'dicom' extra) is not installed")

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "psfhs_04700_us.dcm"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
KW = {"model_name": "test-model", "software_version": "0.0-test"}


def synthetic_mask(h: int = 256, w: int = 256) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w * 35 // 100, h * 23 // 100), (w // 6, h // 20), 20, 0, 360, 1, -1)
    cv2.circle(mask, (w * 6 // 10, h * 6 // 10), min(h, w) // 4, 2, -1)
    return mask


@pytest.fixture
def source() -> Dataset:
    if not SAMPLE.is_file():
        pytest.skip(f"sample DICOM missing: {SAMPLE}")
    return pydicom.dcmread(SAMPLE)


def multiframe_source(n: int = 3, h: int = 64, w: int = 80) -> Dataset:
    """A minimal Ultrasound Multi-frame Image with made-up identity."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "TEST^SYNTHETIC", "SYN0001", "", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20000101", "000000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.Manufacturer = "", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "US", 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameIncrementPointer, ds.FrameTime = 0x00181063, 33.3
    ds.PixelData = np.zeros((n, h, w), np.uint8).tobytes()
    return ds


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) not installed: apt-get install dicom3tools")
    run = subprocess.run([tool, str(path)], check=False, capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def walk(items):
    for item in items:
        yield item
        yield from walk(item.get("ContentSequence", []))


def concept(item) -> str:
    code = item.ConceptNameCodeSequence[0]
    return code.get("CodeValue") or code.get("LongCodeValue")


# --- SEG -----------------------------------------------------------------------------------


def test_seg_round_trip(source, tmp_path):
    mask = synthetic_mask()
    out = write_dicom_seg(source, mask, tmp_path / "a" / "seg.dcm", **KW)
    assert out == tmp_path / "a" / "seg.dcm" and out.is_file()

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEG_CLASS and ds.Modality == "SEG"
    assert ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    refs = [i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert refs == [source.SOPInstanceUID]
    schemes = [i.CodingSchemeDesignator for i in ds.CodingSchemeIdentificationSequence]
    assert PRIVATE_SCHEME in schemes

    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 2
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["pubic symphysis", "fetal head"]
    ps_type = seg.get_segment_description(1).segmented_property_type
    fh_type = seg.get_segment_description(2).segmented_property_type
    assert (ps_type.value, ps_type.scheme_designator) == ("82561000", "SCT")
    assert (fh_type.value, fh_type.scheme_designator) == ("FH", PRIVATE_SCHEME)
    labels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)
    assert labels.shape == (1, *mask.shape)
    np.testing.assert_array_equal(labels[0], mask)


def test_seg_with_one_structure_keeps_both_segments(source, tmp_path):
    mask = synthetic_mask()
    mask[mask == 2] = 0
    seg = hd.seg.segread(write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW))
    assert seg.number_of_segments == 2
    per_segment = seg.get_pixels_by_source_instance([source.SOPInstanceUID])
    assert per_segment.shape == (1, *mask.shape, 2)
    np.testing.assert_array_equal(per_segment[0, ..., 0], mask == 1)
    assert not per_segment[0, ..., 1].any()


def test_seg_rejects_bad_masks(source, tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_dicom_seg(source, np.zeros((10, 10), np.uint8), tmp_path / "x.dcm", **KW)
    bad = synthetic_mask()
    bad[0, 0] = 3
    with pytest.raises(ValueError, match="0, 1 or 2"):
        write_dicom_seg(source, bad, tmp_path / "x.dcm", **KW)
    with pytest.raises(ValueError, match="single-frame"):
        write_dicom_seg(source, synthetic_mask(), tmp_path / "x.dcm", frame_number=2, **KW)
    assert not (tmp_path / "x.dcm").exists()


def test_seg_multiframe_source_references_the_frame(tmp_path):
    src = multiframe_source()
    before = Dataset(src).to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "bulk")
    mask = synthetic_mask(64, 80)
    out = write_dicom_seg(src, mask, tmp_path / "seg.dcm", frame_number=2, **KW)
    after = src.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "bulk")
    assert after == before  # the caller's dataset is left alone
    ds = pydicom.dcmread(out)
    derivations = [
        s for f in ds.PerFrameFunctionalGroupsSequence for d in f.DerivationImageSequence for s in d.SourceImageSequence
    ]
    assert len(derivations) == 2
    for item in derivations:
        assert item.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert item.ReferencedSOPClassUID == UltrasoundMultiFrameImageStorage
        assert item.ReferencedFrameNumber == 2
    refs = [i for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert [i.ReferencedSOPClassUID for i in refs] == [UltrasoundMultiFrameImageStorage]
    assert "ReferencedFrameNumber" not in refs[0]  # the SOP Instance Reference macro has none
    frames = ds.pixel_array  # one binary frame per segment, in segment order
    assert frames.shape == (2, *mask.shape)
    np.testing.assert_array_equal(frames[0] + 2 * frames[1], mask)
    by_frame = hd.seg.segread(out).get_pixels_by_source_frame(src.SOPInstanceUID, [2], combine_segments=True)
    np.testing.assert_array_equal(by_frame[0], mask)
    with pytest.raises(ValueError, match="frame_number"):
        write_dicom_seg(src, mask, tmp_path / "y.dcm", **KW)
    with pytest.raises(ValueError, match="outside"):
        write_dicom_seg(src, mask, tmp_path / "y.dcm", frame_number=4, **KW)


# --- SR ------------------------------------------------------------------------------------


def test_sr_round_trip(source, tmp_path):
    mask = synthetic_mask()
    m = measure_progress(mask, (0.35, 0.35))
    assert m.aop_deg is not None and m.hsd_mm is not None
    out = write_dicom_sr(source, m, tmp_path / "sr.dcm", **KW)

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == COMPREHENSIVE_SR_CLASS and ds.Modality == "SR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.PatientID == source.PatientID and ds.StudyInstanceUID == source.StudyInstanceUID
    evidence = [
        i.ReferencedSOPInstanceUID
        for s in ds.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    ]
    assert evidence == [source.SOPInstanceUID]

    report = hd.sr.srread(out).content
    (group,) = report.get_image_measurement_groups()
    by_code = {meas.name.value: meas for meas in group.get_measurements()}
    assert set(by_code) == {"AOP", "HSD"}
    aop, hsd = by_code["AOP"], by_code["HSD"]
    assert aop.name.scheme_designator == PRIVATE_SCHEME
    assert aop.value == pytest.approx(round(m.aop_deg, 1), abs=1e-9)  # to a tenth, as the table shows it
    assert (aop.unit.value, aop.unit.scheme_designator) == ("deg", "UCUM")
    assert hsd.value == pytest.approx(round(m.hsd_mm, 1), abs=1e-9)
    assert (hsd.unit.value, hsd.unit.scheme_designator) == ("mm", "UCUM")
    assert [s.referenced_sop_instance_uid for s in group.source_images] == [source.SOPInstanceUID]

    lm = m.landmarks
    expected = {
        "AOP": [lm.ps_superior_end, lm.ps_inferior_end, lm.fh_tangent_point],
        "HSD": [lm.ps_inferior_end, lm.hsd_point],
    }
    for code, meas in by_code.items():
        (coords,) = meas.referenced_coordinates
        assert coords.GraphicType == "POLYLINE"
        np.testing.assert_allclose(coords.value, np.asarray(expected[code]) + 0.5, atol=1e-4)
        image = coords.ContentSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID

    evaluations = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()}
    assert ("STATUS", m.status) in evaluations


@pytest.mark.parametrize("orientation, tta", [("standard", True), ("mirrored", False), ("standard", None)])
def test_sr_says_how_its_values_were_made(source, tmp_path, orientation, tta):
    mask = synthetic_mask()
    m = measure_progress(mask if orientation == "standard" else np.ascontiguousarray(mask[:, ::-1]), (0.35, 0.35),
                         orientation=orientation)
    out = write_dicom_sr(source, m, tmp_path / "sr.dcm", tta=tta, **KW)
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
    evaluations = {e.name.value: e.value for e in group.get_qualitative_evaluations() if e.name.value != "REASON"}
    assert evaluations["ORIENT"].value == orientation
    side = "right" if orientation == "standard" else "left"
    assert evaluations["ORIENT"].meaning == f"{orientation}: symphysis inferior end on the {side}"
    if tta is None:
        assert "TTA" not in evaluations
    else:
        assert evaluations["TTA"].value == ("mirror-average" if tta else "none")
    assert "CALIB" not in evaluations  # the caller did not say where the spacing came from


@pytest.mark.parametrize("spacing_source", sorted(SPACING_SOURCES))
def test_sr_says_where_the_millimetres_came_from(source, tmp_path, spacing_source):
    m = measure_progress(synthetic_mask(), (0.35, 0.35), spacing_source=spacing_source)
    out = write_dicom_sr(source, m, tmp_path / "sr.dcm", **KW)
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
    evaluations = {e.name.value: e.value for e in group.get_qualitative_evaluations() if e.name.value != "REASON"}
    assert evaluations["CALIB"].value == spacing_source
    assert evaluations["CALIB"].meaning == SPACING_SOURCES[spacing_source]
    assert 0 < len(SPACING_SOURCES[spacing_source]) <= 64
    assert dciodvfy_errors(out) == []


def test_every_reason_has_a_title_that_fits_a_code_meaning(source, tmp_path):
    assert set(REASON_TITLES) == set(REASONS)
    assert all(0 < len(title) <= 64 for title in REASON_TITLES.values())
    m = measure_progress(synthetic_mask())  # spacing_unknown
    (group,) = hd.sr.srread(write_dicom_sr(source, m, tmp_path / "sr.dcm", **KW)).content \
        .get_image_measurement_groups()
    meanings = {e.value.value: e.value.meaning for e in group.get_qualitative_evaluations() if e.name.value == "REASON"}
    assert meanings == {"spacing_unknown": REASON_TITLES["spacing_unknown"]}


def test_sr_omits_hsd_without_spacing(source, tmp_path):
    m = measure_progress(synthetic_mask())  # no spacing: HSD only in pixels
    assert m.hsd_mm is None and m.hsd_px is not None and m.aop_deg is not None
    out = write_dicom_sr(source, m, tmp_path / "sr.dcm", **KW)
    ds = pydicom.dcmread(out)
    nums = [i for i in walk(ds.ContentSequence) if i.ValueType == "NUM"]
    assert [concept(i) for i in nums] == ["AOP"]
    units = {i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for i in nums}
    assert units == {"deg"}
    # To a tenth, as the table and overlay show it: not 15 digits claiming a precision no measurement has, nor a
    # hundredth that a viewer rounding to one decimal reads otherwise (113.15 as 113.2 beside a table's 113.1).
    stored = str(nums[0].MeasuredValueSequence[0].NumericValue)
    assert stored == f"{round(m.aop_deg, 1):g}" and len(stored.split(".")[-1]) <= 1
    assert stored == f"{m.aop_deg:.1f}".rstrip("0").rstrip(".")  # the digits the table prints
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
    evaluations = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()}
    assert ("STATUS", "warning") in evaluations and ("REASON", "spacing_unknown") in evaluations
    # Its meaning says what the report lacks, not that it holds distances in pixels (it holds none).
    meanings = {e.value.meaning for e in group.get_qualitative_evaluations() if e.name.value == "REASON"}
    assert meanings == {"pixel spacing unknown: no distance in millimetres"}


def test_sr_failed_measurement_has_status_and_no_values(source, tmp_path):
    mask = synthetic_mask()
    mask[mask == 2] = 0
    m = measure_progress(mask, (0.35, 0.35))
    assert m.status == "failed"
    out = write_dicom_sr(source, m, tmp_path / "sr.dcm", **KW)
    ds = pydicom.dcmread(out)
    assert not [i for i in walk(ds.ContentSequence) if i.ValueType == "NUM"]
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
    evaluations = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()}
    assert ("STATUS", "failed") in evaluations and ("REASON", "fh_missing") in evaluations


def test_a_frame_whose_head_the_frame_does_not_show_gets_its_sr_and_no_seg(tmp_path):
    # A head drawn where the frame shows no skull (fh_not_seen): a SEG would label something else a fetal head.
    from ipp_seg.io.dicom_results import DicomOutputsRefused, write_frame_dicom

    if not SAMPLE.is_file():
        pytest.skip(f"sample DICOM missing: {SAMPLE}")
    mask = synthetic_mask()
    unseen = measure_progress(mask, (0.35, 0.35)).with_failure("fh_not_seen")
    with pytest.raises(DicomOutputsRefused, match="no DICOM SEG: .*no skull where the network drew the head"):
        write_frame_dicom(SAMPLE, mask, unseen, tmp_path / "scan", frame_number=1, n_frames=1, seg=True,
                          sr=True, model_sha256=None, tta=False, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_sr.dcm"]
    (group,) = hd.sr.srread(tmp_path / "scan_sr.dcm").content.get_image_measurement_groups()
    assert ("REASON", "fh_not_seen") in {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()}


def test_a_frame_of_no_transperineal_view_gets_its_sr_and_no_seg(tmp_path):
    # A report's screen capture had its text drawn as a head: its SEG, sent to PACS, labelled the text a fetal head.
    from ipp_seg.io.dicom_results import DicomOutputsRefused, write_frame_dicom

    if not SAMPLE.is_file():
        pytest.skip(f"sample DICOM missing: {SAMPLE}")
    mask = synthetic_mask()
    unrecognised = measure_progress(mask, (0.35, 0.35)).with_failure("anatomy_unrecognised")
    with pytest.raises(DicomOutputsRefused, match="no DICOM SEG: .*anatomy_unrecognised") as refusal:
        write_frame_dicom(SAMPLE, mask, unrecognised, tmp_path / "scan", frame_number=1, n_frames=1, seg=True,
                          sr=True, model_sha256=None, tta=False, **KW)
    assert [kind for kind, _ in refusal.value.refused] == ["SEG"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_sr.dcm"]
    (group,) = hd.sr.srread(tmp_path / "scan_sr.dcm").content.get_image_measurement_groups()
    assert ("REASON", "anatomy_unrecognised") in {(e.name.value, e.value.value)
                                                  for e in group.get_qualitative_evaluations()}
    # A frame failed for another cause (the head missing) keeps its SEG: the view was recognised.
    only_ps = np.where(mask == 2, 0, mask)
    written = write_frame_dicom(SAMPLE, only_ps, measure_progress(only_ps, (0.35, 0.35)), tmp_path / "other",
                                frame_number=1, n_frames=1, seg=True, sr=False, model_sha256=None, tta=False, **KW)
    assert [p.name for p in written] == ["other_seg.dcm"]


def test_sr_multiframe_source_references_the_frame(tmp_path):
    src = multiframe_source()
    m = measure_progress(synthetic_mask(64, 80), (0.35, 0.35))
    out = write_dicom_sr(src, m, tmp_path / "sr.dcm", frame_number=3, **KW)
    ds = pydicom.dcmread(out)
    images = [i.ReferencedSOPSequence[0] for i in walk(ds.ContentSequence) if i.ValueType == "IMAGE"]
    assert images and all(
        i.ReferencedSOPInstanceUID == src.SOPInstanceUID and i.ReferencedFrameNumber == 3 for i in images
    )
    with pytest.raises(ValueError, match="frame_number"):
        write_dicom_sr(src, m, tmp_path / "y.dcm", **KW)


# --- validation and the optional dependency ------------------------------------------------


def test_seg_and_sr_name_the_weights_by_checksum(source, tmp_path):
    # A model's name stays when it is retrained: the file's sha256 says which weights made it.
    digest = "ab" * 32
    mask = synthetic_mask()
    seg = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "seg.dcm", model_sha256=digest, **KW))
    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmParameters == f"model_sha256={digest}"
    sr = pydicom.dcmread(write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm",
                                        model_sha256=digest, **KW))
    parameters = [item.TextValue for item in walk(sr.ContentSequence) if concept(item) == "111002"]
    assert parameters and set(parameters) == {f"model_sha256={digest}"}
    # The Device Observer UID is the weights' too: other weights under the same model name and version had
    # shared it (a QA auditor's pass).
    def observer_uid(report):
        (uid,) = [item.UID for item in walk(report.ContentSequence) if concept(item) == "121012"]
        return uid
    again = pydicom.dcmread(write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr2.dcm",
                                           model_sha256=digest, **KW))
    other = pydicom.dcmread(write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr3.dcm",
                                           model_sha256="0" * 64, **KW))
    assert observer_uid(sr) == observer_uid(again) != observer_uid(other)
    for path in (tmp_path / "seg.dcm", tmp_path / "sr.dcm"):
        assert dciodvfy_errors(path) == [], path.name
    # The equipment, where archives and audits of AI results query it: alike in both (the SR had named the
    # manufacturer alone, and the SEG's serial number had been the placeholder "none").
    for ds in (seg, sr):
        assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions, ds.DeviceSerialNumber) == (
            "ipp-seg", "test-model", "0.0-test", digest)
    # Without a checksum (a caller's own model), no parameter is invented.
    bare = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "bare.dcm", **KW))
    assert "AlgorithmParameters" not in bare.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert bare.DeviceSerialNumber == "ipp-seg 0.0-test"
    # The SEG says whether the mask is a mirror-average, as the SR does (the README had said so of both).
    for tta, said in ((True, "mirror-average"), (False, "none")):
        seg = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / f"tta{tta}.dcm", model_sha256=digest,
                                              tta=tta, **KW))
        (algorithm,) = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmParameters == f"model_sha256={digest},tta={said}"
        assert dciodvfy_errors(tmp_path / f"tta{tta}.dcm") == []
    # And under which display convention it was segmented: mirrored first, the mask differs, and
    # two SEGs of one frame had carried the same parameters.
    from ipp_seg.io.dicom_results import write_frame_dicom

    for orientation in ("standard", "mirrored"):
        written = write_frame_dicom(SAMPLE, mask, measure_progress(mask, (0.35, 0.35), orientation=orientation),
                                    tmp_path / orientation, frame_number=1, n_frames=1, seg=True, sr=False,
                                    model_sha256=digest, tta=False, **KW)
        (algorithm,) = pydicom.dcmread(written[0]).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmParameters == f"model_sha256={digest},tta=none,orientation={orientation}"
    assert dciodvfy_errors(written[0]) == []


def test_dciodvfy_reports_no_errors(source, tmp_path):
    mask = synthetic_mask()
    files = [
        write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
        write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW),
        write_dicom_sr(source, measure_progress(mask), tmp_path / "sr_px.dcm", **KW),
    ]
    src = multiframe_source()
    mf_mask = synthetic_mask(64, 80)
    files.append(write_dicom_seg(src, mf_mask, tmp_path / "seg_mf.dcm", frame_number=2, **KW))
    files.append(write_dicom_sr(src, measure_progress(mf_mask, (0.3, 0.3)), tmp_path / "sr_mf.dcm", frame_number=2, **KW))
    for path in files:
        assert dciodvfy_errors(path) == [], path.name


def test_results_of_a_source_that_states_its_time_zone_are_dated_in_it(source, tmp_path, caplog):
    from datetime import datetime, timedelta, timezone

    source.TimezoneOffsetFromUTC = "+0530"  # the study's dates and times, copied, are in India's time
    mask = synthetic_mask()
    files = [write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
             write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)]
    there = datetime.now(timezone(timedelta(hours=5, minutes=30)))
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.TimezoneOffsetFromUTC == "+0530" and ds.StudyDate == source.StudyDate
        written = datetime.strptime(ds.ContentDate + ds.ContentTime[:6], "%Y%m%d%H%M%S").replace(tzinfo=there.tzinfo)
        assert abs((written - there).total_seconds()) < 120, (ds.ContentDate, ds.ContentTime)
        assert ds.InstanceCreationDate == ds.ContentDate
        assert dciodvfy_errors(path) == [], path.name
    # Without a stated zone, none is claimed; an offset that is none is left out, and said.
    del source.TimezoneOffsetFromUTC
    assert "TimezoneOffsetFromUTC" not in pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "a.dcm", **KW))
    source.TimezoneOffsetFromUTC = "+2500"
    with caplog.at_level("WARNING"):
        out = write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "b.dcm", **KW)
    assert "TimezoneOffsetFromUTC" not in pydicom.dcmread(out) and "Timezone Offset From UTC" in caplog.text


def test_a_runs_seg_and_sr_share_their_series_date_and_time_in_the_sources_zone(source, tmp_path):
    # Each run makes series of its own: without a Series Date and Time a PACS had listed a re-run's
    # series beside the first under the same number and description, nothing to tell them apart.
    from datetime import datetime, timezone

    source.TimezoneOffsetFromUTC = "-0300"
    started = datetime(2026, 12, 5, 13, 0, 5, tzinfo=timezone.utc)
    mask = synthetic_mask()
    files = [write_dicom_seg(source, mask, tmp_path / "seg.dcm", series_started=started, **KW),
             write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm",
                            series_started=started, **KW)]
    for path in files:
        ds = pydicom.dcmread(path)
        assert (ds.SeriesDate, ds.SeriesTime) == ("20261205", "100005")  # 13:00:05 UTC in the source's -0300
        assert dciodvfy_errors(path) == [], path.name
    del source.TimezoneOffsetFromUTC  # no zone stated: this machine's local time, as the content's
    local = started.astimezone()
    ds = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "local.dcm", series_started=started, **KW))
    assert (ds.SeriesDate, ds.SeriesTime) == (local.strftime("%Y%m%d"), local.strftime("%H%M%S"))


def test_seg_and_sr_series_are_described_by_the_source_series_they_come_from(source, tmp_path):
    # A study's derived series are all numbered 9001 (SEG) and 9002 (SR): with one description each,
    # a study browser showed four SEG series of four source series as one and the same.
    mask = synthetic_mask()
    measurement = measure_progress(mask, (0.35, 0.35))
    descriptions = []
    for number in (3, 12, None, "x"):
        if number is None:
            del source.SeriesNumber
        else:
            source.SeriesNumber = number if number != "x" else None
        descriptions.append([pydicom.dcmread(write(source, content, tmp_path / f"{number}{kind}.dcm", **KW))
                             .SeriesDescription for kind, write, content in (("seg", write_dicom_seg, mask),
                                                                             ("sr", write_dicom_sr, measurement))])
    # (Research use said first: what a PACS viewer shows of a series, a QA auditor's pass.)
    assert descriptions[0] == ["Research use: PS and FH segmentation of series 3 (test-model)",
                               "Research use: labour progress of series 3 (test-model)"]
    assert descriptions[1][0] == "Research use: PS and FH segmentation of series 12 (test-model)"
    assert descriptions[2] == descriptions[3] == ["Research use: PS and FH segmentation (test-model)",
                                                  "Research use: labour progress (test-model)"]


def test_results_repeat_no_optional_patient_data_and_no_invalid_uid(source, tmp_path):
    # A privacy review: the SEG and SR had copied the patient's other names and free-text comments
    # (optional attributes), a name stored with a date's VR kept that VR, and an invalid Study
    # Instance UID (a name, here) had been copied as it was.
    from pydicom.dataelem import DataElement

    source.OtherPatientNames = "GEBNAME^ERIKA"
    source.PatientComments = "comment MUSTERMANN"
    source.PatientName = "MUSTERMANN^ERIKA"
    mask = synthetic_mask()
    for path in (write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
                 write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)):
        ds = pydicom.dcmread(path)
        assert "OtherPatientNames" not in ds and "PatientComments" not in ds
        assert ds.PatientName == "MUSTERMANN^ERIKA" and ds.PatientID == source.PatientID  # what the IOD needs
        assert dciodvfy_errors(path) == []
    wrong = copy.deepcopy(source)
    tag = wrong["PatientName"].tag
    wrong[tag] = DataElement(tag, "DA", "MUSTERMANN")  # a name stored with a date's VR: invalid, so refused
    with pytest.raises(DicomResultError, match="Patient's Name of .* not valid DICOM") as info:
        write_dicom_seg(wrong, mask, tmp_path / "wrong.dcm", **KW)
    assert "MUSTERMANN" not in str(info.value)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        damaged = copy.deepcopy(source)
        setattr(damaged, keyword, "MUSTERMANN.ERIKA")
        for write in (lambda: write_dicom_seg(damaged, mask, tmp_path / "d.dcm", **KW),
                      lambda: write_dicom_sr(damaged, measure_progress(mask, (0.35, 0.35)), tmp_path / "d.dcm", **KW)):
            with pytest.raises(DicomResultError, match=f"{keyword} is no valid UID") as info:
                write()
            assert "MUSTERMANN" not in str(info.value)


def test_missing_highdicom_gives_install_hint(source, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[dicom\]' in the ipp-seg clone"):
        write_dicom_seg(source, synthetic_mask(), tmp_path / "seg.dcm", **KW)
    with pytest.raises(ImportError, match="need highdicom"):
        write_dicom_sr(source, measure_progress(synthetic_mask()), tmp_path / "sr.dcm", **KW)


# --- sources whose headers break the standard ----------------------------------------------

SECRET_BIRTH_DATE = "1980-02-14"  # the dashes make it an invalid DA


@pytest.mark.parametrize("damage", [
    {"PatientBirthDate": SECRET_BIRTH_DATE}, {"PatientSex": "U"}, {"StudyTime": "25:61"},
    {"StudyDate": "2024-01-01"}, {"delete": ("PatientName", "PatientID", "PatientSex", "PatientBirthDate")},
    {"PatientAge": "SECRET AGE"}, {"AccessionNumber": "SECRET-ACCESSION-20"}, {"StudyDescription": "SECRET " * 12},
    # Of the right form, but no such day or minute: highdicom had refused both objects (a hand-typed birth date).
    {"PatientBirthDate": "19900229"}, {"StudyDate": "20240431"}, {"StudyTime": "126000"},
], ids=["birth-date", "sex", "time", "study-date", "no-patient", "age", "long-accession", "long-description",
        "no-such-day", "no-such-date", "no-such-minute"])
def test_seg_and_sr_from_a_header_that_breaks_the_standard(source, tmp_path, damage, caplog):
    # Scanners and anonymisers write such headers; highdicom refused them with a traceback that
    # quoted the value. The invalid or missing values are left empty (type 2 allows it), optional ones out.
    for keyword in damage.pop("delete", ()):
        delattr(source, keyword)
    for keyword, value in damage.items():
        setattr(source, keyword, value)
    caplog.clear()  # pydicom's own warning on setting the value above quotes it; the CLI silences pydicom
    mask = synthetic_mask()
    seg = write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW)
    sr = write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)
    for path in (seg, sr):
        written = pydicom.dcmread(path)
        for keyword in damage:  # (an optional one, such as the age, left out)
            assert written.get(keyword) in ("", None)
            assert keyword not in written or keyword not in ("PatientAge", "StudyDescription")
        assert written.StudyInstanceUID == source.StudyInstanceUID
    assert SECRET_BIRTH_DATE not in caplog.text and "SECRET" not in caplog.text
    assert all(keyword in caplog.text for keyword in damage)  # the attribute is named, not its value
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(seg) == [] and dciodvfy_errors(sr) == []


@pytest.mark.parametrize("coding", ["irreversible", "reversible"])
def test_a_seg_of_a_jpeg2000_source_says_lossy_where_its_wavelet_is_the_irreversible_one(tmp_path, coding):
    # JPEG 2000 (1.2.840.10008.1.2.4.91) holds lossless or lossy coding: a source compressed lossily (the 9-7
    # wavelet) without (0028,2110) had given a SEG that said 00. A reversible one is not said lossy.
    pytest.importorskip("openjpeg")
    from pydicom.uid import JPEG2000, JPEG2000Lossless

    ds = pydicom.dcmread(SAMPLE)
    if coding == "irreversible":
        ds.compress(JPEG2000, j2k_cr=[10])
    else:  # a reversible codestream, stored under the syntax that allows either
        ds.compress(JPEG2000Lossless)
        ds.file_meta.TransferSyntaxUID = JPEG2000
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if keyword in ds:  # (pydicom says so itself: as an archive that compresses on ingest would not)
            delattr(ds, keyword)
    ds.save_as(tmp_path / "j2k.dcm")
    read = pydicom.dcmread(tmp_path / "j2k.dcm", stop_before_pixels=True)
    seg = pydicom.dcmread(write_dicom_seg(read, synthetic_mask(), tmp_path / "seg.dcm", **KW))
    if coding == "irreversible":
        assert (seg.LossyImageCompression, seg.LossyImageCompressionMethod) == ("01", "ISO_15444_1")
    else:
        assert seg.LossyImageCompression == "00"


def test_a_source_whose_patient_id_is_not_valid_dicom_gets_no_seg_or_sr(source, tmp_path, caplog):
    # Left empty, a 70-character Patient ID had given results under the source's study that a PACS could not match to
    # its patient (quarantined, or filed under a patient of their own). Refused, its value never quoted.
    source.PatientID = "SECRET" * 12
    mask = synthetic_mask()
    for write, content in ((write_dicom_seg, mask), (write_dicom_sr, measure_progress(mask, (0.35, 0.35)))):
        with pytest.raises(DicomResultError, match="the Patient ID of .* is not valid DICOM .* none is made"):
            write(source, content, tmp_path / "x.dcm", **KW)
    assert not (tmp_path / "x.dcm").exists() and "SECRET" not in caplog.text
    # Another ID of the patient's that breaks the standard is left empty as any other value; the source's own
    # Patient ID, valid, is kept and the results are written.
    from pydicom.dataset import Dataset

    other = Dataset()
    other.PatientID = "SECRET" * 12
    source.PatientID, source.OtherPatientIDsSequence = "12345", [other]
    written = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW))
    assert written.PatientID == "12345"


@pytest.mark.parametrize("name, cause", [
    ("SECRET" * 12, "too long"), ("SECRET\\NAME", "several values"), ("SECRET^NAME\x07", "a control character"),
    ("S^E^C^R^E^T", "more name parts"), ("latin-1", "bytes its declared character set does not hold")])
def test_a_source_whose_patients_name_is_not_valid_dicom_gets_no_seg_or_sr(source, tmp_path, caplog, name, cause):
    # Left empty beside the source's Patient ID, an invalid name (a 72-character part, two values, a control
    # character, six parts) had given results a PACS would not match to its patient, or, keeping the newest
    # demographics, would empty the patient's name with. Latin-1 bytes under ISO_IR 192 had been written with
    # U+FFFD in place of the letters pydicom could not decode. Refused as an invalid Patient ID is, unquoted.
    import warnings

    if name == "latin-1":
        from pydicom.dataelem import DataElement

        source.SpecificCharacterSet = "ISO_IR 192"
        source["PatientName"] = DataElement(0x00100010, "PN", "SECRET^M\xfcller".encode("latin-1"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source.save_as(tmp_path / "source.dcm")
            source = pydicom.dcmread(tmp_path / "source.dcm")
    else:
        source.PatientName = name
    mask = synthetic_mask()
    for write, content in ((write_dicom_seg, mask), (write_dicom_sr, measure_progress(mask, (0.35, 0.35)))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (pydicom's own, on decoding the name: the CLI silences pydicom)
            with pytest.raises(DicomResultError, match="the Patient's Name of .* is not valid DICOM .* none is made"
                               ) as refused:
                write(source, content, tmp_path / "x.dcm", **KW)
            assert f"not valid DICOM ({cause}" in str(refused.value)  # what is wrong with it, not every cause
    assert not (tmp_path / "x.dcm").exists() and "SECRET" not in caplog.text


def test_a_source_read_from_a_file_is_not_quoted_while_its_attributes_are_copied(source, tmp_path, caplog):
    """A source read from a file decodes its values when they are first used, here while the
    SEG and SR copy them. Nothing of an invalid one may reach the log or the warnings of a
    program that calls the library (the CLI silences pydicom; a program does not): the
    attribute is named, its value never."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source.PatientBirthDate, source.PatientSex = SECRET_BIRTH_DATE, "SECRET SEX"
        source.save_as(tmp_path / "source.dcm")
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # (pydicom logged the values as they were set above)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = pydicom.dcmread(tmp_path / "source.dcm")  # the values stay undecoded until used
        mask = synthetic_mask()
        write_dicom_seg(read, mask, tmp_path / "seg.dcm", **KW)
        write_dicom_sr(read, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert SECRET_BIRTH_DATE not in said and "SECRET" not in said
    assert "PatientBirthDate" in caplog.text  # named, as blanked


def test_seg_and_sr_from_a_source_in_japanese_character_sets(source, tmp_path):
    # An empty first value of Specific Character Set means ISO 2022 IR 6 (valid DICOM, written
    # by Japanese systems); highdicom refused it until it is named.
    source.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    mask = synthetic_mask()
    seg = write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW)
    sr = write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)
    for path in (seg, sr):
        assert list(pydicom.dcmread(path).SpecificCharacterSet)[1:] == ["ISO 2022 IR 87"]


def test_a_source_that_cannot_be_referenced_is_refused_without_quoting_it(source, tmp_path):
    from ipp_seg.io.dicom_results import DicomResultError

    del source.SeriesInstanceUID
    with pytest.raises(DicomResultError, match="SeriesInstanceUID"):
        write_dicom_seg(source, synthetic_mask(), tmp_path / "seg.dcm", **KW)


def test_highdicom_refusals_name_the_error_class_only(source, tmp_path, monkeypatch):
    from ipp_seg.io.dicom_results import DicomResultError

    def refuse(*args, **kwargs):
        raise ValueError(f"Unable to convert {SECRET_BIRTH_DATE!r}")

    monkeypatch.setattr(hd.sr, "ComprehensiveSR", refuse)
    with pytest.raises(DicomResultError) as caught:
        write_dicom_sr(source, measure_progress(synthetic_mask(), (0.35, 0.35)), tmp_path / "sr.dcm", **KW)
    assert SECRET_BIRTH_DATE not in str(caught.value) and "ValueError" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_valid_values_are_kept_and_other_defects_left_empty_or_made_readable(source, tmp_path, caplog):
    """Patient's Weight and Size (DS) are valid as written; a name given two values or holding a
    control character is not (left empty, the attribute named); text that is not ASCII where no
    character set is declared, or under one DICOM does not define, is written as UTF-8 instead
    of refusing the whole object; the caller's dataset is not changed."""
    import warnings

    from pydicom.dataelem import DataElement

    mask = synthetic_mask()
    measurement = measure_progress(mask, (0.35, 0.35))

    def written(ds, name):
        seg = write_dicom_seg(ds, mask, tmp_path / f"{name}_seg.dcm", **KW)
        sr = write_dicom_sr(ds, measurement, tmp_path / f"{name}_sr.dcm", **KW)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(seg) == [] and dciodvfy_errors(sr) == [], name
        return pydicom.dcmread(seg), pydicom.dcmread(sr)

    source.PatientWeight, source.PatientSize = "70.5", "1.65"
    for ds in written(source, "sizes"):
        assert float(ds.PatientWeight) == 70.5 and float(ds.PatientSize) == 1.65

    two = pydicom.dcmread(SAMPLE)
    two["ReferringPhysicianName"] = DataElement(0x00080090, "PN", "SECRET\\NAME")
    bell = pydicom.dcmread(SAMPLE)
    bell.ReferringPhysicianName = "SECRET^NAME\x07"
    for name, ds in (("two", two), ("bell", bell)):
        caplog.clear()
        for out in written(ds, name):
            assert str(out.ReferringPhysicianName) == "" and out.PatientName == ds.PatientName
        assert "ReferringPhysicianName" in caplog.text and "SECRET" not in caplog.text
    assert str(bell.ReferringPhysicianName) == "SECRET^NAME\x07"  # the caller's dataset as it was

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warnings about the character sets
        latin = pydicom.dcmread(SAMPLE)
        del latin.SpecificCharacterSet
        latin.PatientName = "Müller^Zoë"
        unknown = pydicom.dcmread(SAMPLE)
        unknown.SpecificCharacterSet = "ISO_IR 999"
        for name, ds in (("latin", latin), ("unknown", unknown)):
            for out in written(ds, name):
                # Text that is not ASCII as UTF-8; ASCII text needs no declared set.
                assert out.get("SpecificCharacterSet") == ("ISO_IR 192" if name == "latin" else None)
                assert str(out.PatientName) == str(ds.PatientName)
        assert "SpecificCharacterSet" not in latin


def test_sr_keeps_a_value_whose_landmark_lies_beyond_the_frame(source, tmp_path):
    """A head reaching the frame's edge fits an ellipse whose tangent point can lie outside the
    image: the AoP is still reported (with its reasons), drawn without its outline."""
    from dataclasses import replace

    mask = synthetic_mask()
    m = measure_progress(mask, (0.35, 0.35))
    outside = replace(m, landmarks=replace(m.landmarks, fh_tangent_point=(float(source.Columns) + 5.0, 100.0)))
    out = write_dicom_sr(source, outside, tmp_path / "sr.dcm", **KW)
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
    by_code = {meas.name.value: meas for meas in group.get_measurements()}
    assert by_code["AOP"].value == pytest.approx(round(m.aop_deg, 1), abs=1e-9) and not by_code["AOP"].referenced_coordinates
    assert by_code["HSD"].referenced_coordinates  # its own landmarks are inside
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(out) == []


def test_seg_of_a_source_in_a_frame_of_reference_without_slice_thickness_is_valid(source, tmp_path):
    """A SEG in a frame of reference must give a slice thickness, which a 2-D ultrasound source
    with Pixel Spacing and a Frame of Reference does not have: the SEG is made outside that frame
    (as for a source without one) rather than invalid, and the caller's dataset keeps it."""
    del source.SequenceOfUltrasoundRegions
    source.PixelSpacing = ["0.35", "0.35"]
    source.FrameOfReferenceUID, source.PositionReferenceIndicator = generate_uid(), ""
    seg = write_dicom_seg(source, synthetic_mask(), tmp_path / "seg.dcm", **KW)
    written = pydicom.dcmread(seg)
    assert "FrameOfReferenceUID" not in written and "FrameOfReferenceUID" in source
    assert [float(v) for v in written.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] \
        == [0.35, 0.35]
    assert dciodvfy_errors(seg) == []


def test_headers_the_checks_must_not_trip_on(source, tmp_path):
    """An unknown public tag with several values (pydicom's dictionary lacks it), an empty Slice
    Thickness beside a Frame of Reference, and a character set pydicom reads but highdicom does
    not write (ISO_IR 6): each still gives a valid SEG and SR."""
    from pydicom.dataelem import DataElement

    mask = synthetic_mask()
    measurement = measure_progress(mask, (0.35, 0.35))
    unknown_tag = pydicom.dcmread(SAMPLE)
    unknown_tag.add(DataElement(0x00109999, "LO", ["a", "b"]))
    unknown_tag.add(DataElement(0x00181999, "DA", ["20200101", "20200102"]))
    empty_thickness = pydicom.dcmread(SAMPLE)
    del empty_thickness.SequenceOfUltrasoundRegions
    empty_thickness.PixelSpacing, empty_thickness.SliceThickness = ["0.35", "0.35"], ""
    empty_thickness.FrameOfReferenceUID, empty_thickness.PositionReferenceIndicator = generate_uid(), ""
    ascii_six = pydicom.dcmread(SAMPLE)
    ascii_six.SpecificCharacterSet = "ISO_IR 6"
    for name, ds in (("tag", unknown_tag), ("thickness", empty_thickness), ("ir6", ascii_six)):
        seg = write_dicom_seg(ds, mask, tmp_path / f"{name}_seg.dcm", **KW)
        sr = write_dicom_sr(ds, measurement, tmp_path / f"{name}_sr.dcm", **KW)
        assert str(pydicom.dcmread(sr).PatientName) == str(ds.PatientName)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(seg) == [] and dciodvfy_errors(sr) == [], name
    assert "FrameOfReferenceUID" not in pydicom.dcmread(tmp_path / "thickness_seg.dcm")


def test_what_highdicom_copies_beyond_the_patient_group_is_checked_too(tmp_path):
    """Physicians, visit and clinical-trial attributes and the items of copied sequences reach
    the SEG and SR as well: an invalid value there is left empty, and text inside a sequence is
    decoded and written in the object's character set, not passed on as the source's bytes."""
    from pydicom.dataelem import DataElement

    mask = synthetic_mask()
    measurement = measure_progress(mask, (0.35, 0.35))
    latin = pydicom.dcmread(SAMPLE)
    del latin.SpecificCharacterSet
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "P1", "99X"
    item.add(DataElement(0x00080104, "LO", b"L\xfc1 "))  # Code Meaning in Latin-1 bytes, no character set declared
    latin.ProcedureCodeSequence = [item]
    latin.PhysiciansOfRecord = "Phys^\x02One"  # a control character
    latin.AdmissionID = "A" * 90  # longer than LO allows
    latin.ReferringPhysicianName = "a^b^c^d^e^f"  # six name parts
    path = tmp_path / "saved.dcm"
    latin.save_as(path, enforce_file_format=True)
    source = pydicom.dcmread(path)  # as read from disk: the sequence's values not yet decoded
    for out in (write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
                write_dicom_sr(source, measurement, tmp_path / "sr.dcm", **KW)):
        written = pydicom.dcmread(out)
        assert written.SpecificCharacterSet == "ISO_IR 192"
        assert written.ProcedureCodeSequence[0].CodeMeaning == "Lü1"
        # Optional ones left out (an empty value under the study's UID is one more to compare), type 2 emptied.
        assert "PhysiciansOfRecord" not in written and "AdmissionID" not in written
        assert str(written.ReferringPhysicianName) == ""
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(out) == [], out.name
    assert source.ProcedureCodeSequence[0].CodeMeaning == "Lü1"  # the caller's items as they were


def test_a_frame_of_reference_that_is_not_whole_gives_a_seg_outside_it(tmp_path):
    """An empty Frame of Reference UID, a position without an orientation, a thickness of two
    values: the SEG is made outside that frame of reference (valid), not refused or invalid."""
    mask = synthetic_mask()
    for name, damage in (("empty_uid", {"FrameOfReferenceUID": "", "SliceThickness": "1"}),
                         ("position_only", {"ImagePositionPatient": [0, 0, 0], "SliceThickness": "1"}),
                         ("two_thicknesses", {"SliceThickness": ["1", "2"]})):
        ds = pydicom.dcmread(SAMPLE)
        del ds.SequenceOfUltrasoundRegions
        ds.PixelSpacing, ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ["0.35", "0.35"], generate_uid(), ""
        for keyword, value in damage.items():
            setattr(ds, keyword, value)
        seg = write_dicom_seg(ds, mask, tmp_path / f"{name}.dcm", **KW)
        assert "FrameOfReferenceUID" not in pydicom.dcmread(seg)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(seg) == [], name


def test_text_in_no_declared_character_set_that_is_valid_utf8_is_read_as_utf8(tmp_path, caplog):
    """Devices often write UTF-8 without declaring it; pydicom reads such bytes as Latin-1, so the
    SEG and SR held "MÃ¼ller". Each copied text attribute whose bytes are valid UTF-8 is taken as
    UTF-8 (in a sequence item too); one that is not stays Latin-1."""
    import warnings

    from pydicom.dataelem import DataElement

    mask = synthetic_mask()
    ds = pydicom.dcmread(SAMPLE)
    del ds.SpecificCharacterSet
    ds["PatientName"] = DataElement(0x00100010, "PN", "Müller^Zoë^Test".encode())
    ds["StudyDescription"] = DataElement(0x00081030, "LO", "Geburtshilfe Übersicht".encode())
    ds["AdditionalPatientHistory"] = DataElement(0x001021B0, "LT", "Straße 1".encode("latin-1"))  # Latin-1 after all
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "P1", "99X"
    item.add(DataElement(0x00080104, "LO", "Zoë-1".encode()))
    ds.ProcedureCodeSequence = [item]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(tmp_path / "undeclared.dcm", enforce_file_format=True)
    source = pydicom.dcmread(tmp_path / "undeclared.dcm")
    caplog.set_level(logging.INFO)
    for out in (write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
                write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)):
        written = pydicom.dcmread(out)
        assert written.SpecificCharacterSet == "ISO_IR 192"
        assert str(written.PatientName) == "Müller^Zoë^Test"
        assert written.StudyDescription == "Geburtshilfe Übersicht"
        assert written.AdditionalPatientHistory == "Straße 1"
        assert written.ProcedureCodeSequence[0].CodeMeaning == "Zoë-1"
        assert dciodvfy_errors(out) == [], out.name
    assert "Müller" not in caplog.text and "Zo" not in caplog.text
    assert str(source.PatientName) == "MÃ¼ller^ZoÃ«^Test"  # the caller's dataset as pydicom read it


def test_a_value_left_empty_is_named_with_its_source_file(tmp_path, caplog):
    """In a run over many scans, the warning says which scan's SEG or SR lost which attribute
    (never the value)."""
    import warnings

    mask = synthetic_mask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warnings quote the values set here
        ds = pydicom.dcmread(SAMPLE)
        ds.AccessionNumber, ds.PatientSex = "SECRETID" + "9" * 20, "f"  # (a Patient ID so is refused: below)
        ds.save_as(tmp_path / "scan_0007.dcm", enforce_file_format=True)
    source = pydicom.dcmread(tmp_path / "scan_0007.dcm")
    caplog.clear()
    write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW)
    write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)
    said = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "not valid DICOM" in r.getMessage()]
    assert len(said) == 2 and all(str(tmp_path / "scan_0007.dcm") in line for line in said), said
    assert all("AccessionNumber" in line and "PatientSex" in line for line in said)
    assert "SEG" in said[0] and "SR" in said[1]
    assert "SECRETID" not in caplog.text
    for name in ("seg.dcm", "sr.dcm"):
        written = pydicom.dcmread(tmp_path / name)
        assert written.AccessionNumber == "" and written.PatientSex == ""
    # A dataset made in memory has no file to name.
    caplog.clear()
    in_memory = pydicom.dcmread(SAMPLE)
    in_memory.filename = None
    in_memory.PatientSex = "U"
    write_dicom_seg(in_memory, mask, tmp_path / "mem.dcm", **KW)
    assert "PatientSex of the source is not valid DICOM; left empty in its SEG" in caplog.text


@pytest.mark.parametrize("charset, name", [("ISO 2022 IR 100", "Müller^Zoë"),
                                           ("ISO 2022 IR 126", "Παπαδοπούλου^Ελένη"),
                                           ("ISO 2022 IR 100", "DOE^JANE")], ids=["latin", "greek", "ascii"])
def test_a_single_iso_2022_character_set_is_written_as_utf8(tmp_path, caplog, charset, name):
    """A single "ISO 2022 IR 100" is valid DICOM, but highdicom refuses code extensions with one
    term, so no SEG or SR was made: the text is written as UTF-8 instead (said in a warning), or
    with no character set when it is ASCII."""
    mask = synthetic_mask()
    ds = pydicom.dcmread(SAMPLE)
    ds.SpecificCharacterSet, ds.PatientName = charset, name
    ds.save_as(tmp_path / "source.dcm", enforce_file_format=True)
    source = pydicom.dcmread(tmp_path / "source.dcm")
    caplog.clear()
    for out in (write_dicom_seg(source, mask, tmp_path / "seg.dcm", **KW),
                write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **KW)):
        written = pydicom.dcmread(out)
        assert written.get("SpecificCharacterSet") == (None if name.isascii() else "ISO_IR 192")
        assert str(written.PatientName) == name
        assert dciodvfy_errors(out) == [], out.name
    assert ("written as UTF-8" in caplog.text) == (not name.isascii())
    assert source.SpecificCharacterSet == charset


def test_sr_says_whether_the_angle_is_in_doubt_beside_its_number(source, tmp_path):
    # A doubted AoP had gone into the SR as a plain NUM, its doubt only in the reasons' prose.
    sound = measure_progress(synthetic_mask(), (0.35, 0.35))
    doubted = sound.with_warning("orientation_doubtful")
    failed = measure_progress(np.zeros((64, 64), np.uint8), (0.35, 0.35))
    said = {}
    for name, m in (("sound", sound), ("doubted", doubted), ("failed", failed)):
        out = write_dicom_sr(source, m, tmp_path / f"{name}.dcm", **KW)
        (group,) = hd.sr.srread(out).content.get_image_measurement_groups()
        evaluations = {e.name.value: e.value for e in group.get_qualitative_evaluations()}
        said[name] = evaluations.get("AOPDOUBT"), evaluations.get("HSDDOUBT")
        assert dciodvfy_errors(out) == []
    assert (said["sound"][0].value, said["sound"][0].scheme_designator) == ("373067005", "SCT")  # No
    assert said["doubted"][0].value == "373066001"  # Yes
    assert said["sound"][1].value == "373067005" and said["doubted"][1].value == "373066001"  # the HSD alike
    assert said["failed"] == (None, None)  # no angle, no distance: nothing to doubt
    # An unstable HSD is doubted alone: the angle is not.
    unstable = sound.with_warning("hsd_unstable")
    (group,) = hd.sr.srread(write_dicom_sr(source, unstable, tmp_path / "unstable.dcm", **KW)).content \
        .get_image_measurement_groups()
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert (evaluations["AOPDOUBT"], evaluations["HSDDOUBT"]) == ("373067005", "373066001")


@pytest.mark.parametrize("declared", [None, "00"])
def test_a_seg_of_a_source_stored_lossily_says_it_was_lossily_compressed(source, tmp_path, declared):
    # An archive that compresses on ingest stores JPEG baseline without (0028,2110): the SEG had said 00, never
    # lossily compressed, of a mask drawn on JPEG pixels.
    from pydicom.uid import JPEGBaseline8Bit

    source.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # (the header is what the SEG reads of its source)
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in source:
            delattr(source, keyword)
    if declared is not None:
        source.LossyImageCompression = declared  # a stale flag from before the archive compressed it
    seg = pydicom.dcmread(write_dicom_seg(source, synthetic_mask(), tmp_path / "seg.dcm", **KW))
    assert seg.LossyImageCompression == "01" and seg.LossyImageCompressionMethod == "ISO_10918_1"
    source.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # stored as it was made: as declared
    source.LossyImageCompression = "00"
    assert pydicom.dcmread(write_dicom_seg(source, synthetic_mask(), tmp_path / "seg2.dcm", **KW)
                           ).LossyImageCompression == "00"
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_a_single_frame_class_that_states_its_one_frame_gets_no_frame_reference(source, tmp_path):
    # A PACS engineer's pass: an Ultrasound Image (single-frame class) with Number of Frames 1 added, as some exports
    # write it, had its SEG and SR reference "frame 1": dciodvfy errs ("shall not be present for Referenced SOP Class
    # that is not multi-frame"), and a strict archive may refuse them.
    stated = copy.deepcopy(source)
    stated.NumberOfFrames = 1
    mask = synthetic_mask(int(source.Rows), int(source.Columns))
    seg = write_dicom_seg(stated, mask, tmp_path / "seg.dcm", frame_number=1, **KW)
    sr = write_dicom_sr(stated, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", frame_number=1, **KW)
    for path in (seg, sr):
        found = []

        def collect(items):
            for item in items:
                if "ReferencedFrameNumber" in item:
                    found.append(item.ReferencedFrameNumber)
                for element in item:
                    if element.VR == "SQ":
                        collect(element.value)

        collect([pydicom.dcmread(path)])
        assert found == [], path.name
        assert dciodvfy_errors(path) == [], path.name
    assert pydicom.dcmread(seg).SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
    # A cine stored under that class cannot say which frame its objects are of: refused, in words.
    stated.NumberOfFrames = 3
    for frame in (1, 2):  # (its first frame too: a reference without a frame number would claim the whole cine)
        with pytest.raises(DicomResultError, match="3 frames under a single-frame SOP class"):
            write_dicom_seg(stated, mask, tmp_path / "seg2.dcm", frame_number=frame, **KW)


@pytest.mark.parametrize("patient_id", [None, ""])
def test_a_source_without_a_patient_id_is_said_to_give_objects_without_one(source, tmp_path, caplog, patient_id):
    # A PACS engineer's pass: an invalid Patient ID is refused ("would not match its patient"), an absent or empty
    # one had passed into the SEG and SR without a word.
    mask = synthetic_mask(int(source.Rows), int(source.Columns))
    written = copy.deepcopy(source)
    if patient_id is None:
        del written.PatientID
    else:
        written.PatientID = patient_id
    written.save_as(tmp_path / "scan_0009.dcm", enforce_file_format=True)
    written = pydicom.dcmread(tmp_path / "scan_0009.dcm")
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        write_dicom_seg(written, mask, tmp_path / "seg.dcm", **KW)
    said = [r.getMessage() for r in caplog.records if "has no Patient ID" in r.getMessage()]
    assert len(said) == 1 and str(tmp_path / "scan_0009.dcm") in said[0] and "its SEG has none either" in said[0]
    assert pydicom.dcmread(tmp_path / "seg.dcm").PatientID == ""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        write_dicom_seg(source, mask, tmp_path / "seg2.dcm", **KW)
    assert "has no Patient ID" not in caplog.text


def test_a_seg_made_outside_an_incomplete_frame_of_reference_names_its_source(source, tmp_path, caplog):
    # A PACS engineer's pass: the line said "the source's frame of reference ..." once per file of a run, naming none.
    incomplete = copy.deepcopy(source)
    incomplete.FrameOfReferenceUID, incomplete.PixelSpacing = generate_uid(), [0.35, 0.35]
    if "SliceThickness" in incomplete:
        del incomplete.SliceThickness
    incomplete.save_as(tmp_path / "scan_0011.dcm", enforce_file_format=True)
    incomplete = pydicom.dcmread(tmp_path / "scan_0011.dcm")
    mask = synthetic_mask(int(source.Rows), int(source.Columns))
    with caplog.at_level(logging.INFO, logger="ipp_seg"):
        seg = write_dicom_seg(incomplete, mask, tmp_path / "seg.dcm", **KW)
    said = [r.getMessage() for r in caplog.records if "not whole enough" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'scan_0011.dcm'}: its frame of reference")
    assert "FrameOfReferenceUID" not in pydicom.dcmread(seg)


def test_an_escape_in_a_name_without_iso_2022_is_refused_as_a_control_character(source, tmp_path, caplog):
    # A privacy and security pass: "DOE^JANE^<ESC>[31mRED" under ISO_IR 100 was copied into the SEG and SR (a
    # terminal's colour code in a patient's name); ESC introduces a code extension only under ISO 2022.
    named = copy.deepcopy(source)
    named.SpecificCharacterSet = "ISO_IR 100"
    named.PatientName = "DOE^JANE^\x1b[31mRED"
    mask = synthetic_mask(int(source.Rows), int(source.Columns))
    with caplog.at_level(logging.WARNING, logger="ipp_seg"), \
            pytest.raises(DicomResultError, match="Patient's Name of .* not valid DICOM") as info:
        write_dicom_seg(named, mask, tmp_path / "seg.dcm", **KW)
    assert "JANE" not in caplog.text and "JANE" not in str(info.value)


def test_a_model_name_of_any_characters_is_written_as_valid_dicom_text(source, tmp_path):
    # A model file named modèle_ärzte had put bytes of no declared character set into every object, a backslash
    # had made its name two values (and the SEG refused as the source's fault), and a 75-character name had
    # passed the 64 a LO holds in the SEG's Algorithm Name.
    mask = synthetic_mask()
    for given, shown in (("modèle_ärzte", "modele_arzte"), ("net\\v2\x07", "net_v2_"), ("m" * 75, "m" * 61 + "...")):
        kw = {**KW, "model_name": given}
        seg = pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / "seg.dcm", **kw))
        sr = write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / "sr.dcm", **kw)
        algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == shown and seg.ManufacturerModelName == shown
        assert pydicom.dcmread(sr).ManufacturerModelName == shown
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(tmp_path / "seg.dcm") == [] and dciodvfy_errors(sr) == [], given


def test_a_structure_keeps_its_tracking_uid_through_the_objects_of_one_derived_series(source, tmp_path):
    # A new Tracking UID per frame had told a reader that tracks findings that each frame of a cine showed another
    # pubic symphysis; objects of another series (another run, another source series) track their own.
    from pydicom.uid import generate_uid

    mask, series, other = synthetic_mask(), generate_uid(), generate_uid()

    def tracking(ds):
        return [str(item.TrackingUID) for item in ds.SegmentSequence]

    one, two, three = (pydicom.dcmread(write_dicom_seg(source, mask, tmp_path / f"{n}.dcm", series_instance_uid=s,
                                                       instance_number=n, **KW))
                       for n, s in ((1, series), (2, series), (3, other)))
    assert tracking(one) == tracking(two) and len(set(tracking(one))) == 2
    assert not set(tracking(one)) & set(tracking(three))
    groups = [hd.sr.srread(write_dicom_sr(source, measure_progress(mask, (0.35, 0.35)), tmp_path / f"sr{n}.dcm",
                                          series_instance_uid=series, instance_number=n, **KW))
              .content.get_image_measurement_groups()[0].tracking_uid for n in (1, 2)]
    assert groups[0] == groups[1] and groups[0] not in tracking(one)


def test_the_sr_names_the_seg_of_its_frame_among_its_evidence(tmp_path):
    # Nothing in the SR had led to the SEG its values were measured on: only the file names paired them.
    from ipp_seg.io.dicom_results import write_frame_dicom

    mask = synthetic_mask()
    seg, sr = write_frame_dicom(SAMPLE, mask, measure_progress(mask, (0.35, 0.35)), tmp_path / "scan", frame_number=1,
                                n_frames=1, seg=True, sr=True, model_sha256=None, tta=False, **KW)
    seg_ds, sr_ds = pydicom.dcmread(seg), pydicom.dcmread(sr)
    named = {item.ReferencedSOPInstanceUID: item.ReferencedSOPClassUID for study in
             sr_ds.CurrentRequestedProcedureEvidenceSequence for series in study.ReferencedSeriesSequence
             for item in series.ReferencedSOPSequence}
    source = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    assert named == {seg_ds.SOPInstanceUID: seg_ds.SOPClassUID, source.SOPInstanceUID: source.SOPClassUID}
    (alone,) = write_frame_dicom(SAMPLE, mask, measure_progress(mask, (0.35, 0.35)), tmp_path / "alone",
                                 frame_number=1, n_frames=1, seg=False, sr=True, model_sha256=None, tta=False, **KW)
    assert len(pydicom.dcmread(alone).CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 1
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(sr) == []
