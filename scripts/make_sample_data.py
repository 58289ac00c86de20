"""Generate sample_data/: PSFHS frames as PNG and one as an ultrasound DICOM.

Usage (from the repository root):

    python scripts/make_sample_data.py [--psfhs ../shared/data/psfhs] [--out sample_data]

The PSFHS frames (Chen G et al., Scientific Data 11:436 (2024),
doi:10.1038/s41597-024-03266-4, CC BY 4.0) carry no physical pixel size. The DICOM states an
ILLUSTRATIVE calibration of SAMPLE_SPACING_MM per pixel in its Sequence of Ultrasound Regions
so that the millimetre path of the tools can be shown; it is not the frame's true calibration.
The output is deterministic (fixed UIDs, no dates), so re-running it changes no bytes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from a checkout

from ipp_seg.io import read_frame  # noqa: E402

logger = logging.getLogger("make_sample_data")

# Validation-block frames (two wide-sector views and one narrow, deeper-looking one).
PNG_CASES = ("04700", "04750", "04380")
DICOM_CASE = "04700"
# Illustrative only: 256 px x 0.35 mm = 9.0 cm of depth, a usual transperineal setting.
SAMPLE_SPACING_MM = 0.35


def _uid(label: str) -> str:
    # A UUID-derived UID (PS3.5 B.2) from a name-based UUID: the same on every run.
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'https://ipp-seg/sample_data/{label}').int}"


def psfhs_frame(psfhs: Path, case: str) -> np.ndarray:
    """The (256, 256) uint8 frame of one PSFHS case."""
    frame = read_frame(psfhs / "image_mha" / f"{case}.mha")
    if frame.pixels.dtype != np.uint8:
        raise ValueError(f"PSFHS case {case}: expected uint8 pixels, got {frame.pixels.dtype}")
    return frame.pixels


def write_png(path: Path, pixels: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(encoded.tobytes())


def ultrasound_dataset(pixels: np.ndarray, case: str, spacing_mm: float) -> Dataset:
    """An Ultrasound Image Storage data set for one greyscale frame, anonymous made-up patient."""
    rows, columns = pixels.shape
    sop_instance_uid = _uid(f"{case} instance")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    # SOP Common
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    # Patient: made up and anonymous; no real person is behind this file.
    ds.PatientName = "ANON^"
    ds.PatientID = "ANON0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "No real patient: made-up identity for a public research frame"
    # General Study
    ds.StudyInstanceUID = _uid(f"{case} study")
    ds.StudyDate = "20000101"  # placeholder, not an examination date
    ds.StudyTime = "000000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "SAMPLE1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "ipp-seg sample: intrapartum transperineal ultrasound"
    # General Series
    ds.Modality = "US"
    ds.SeriesInstanceUID = _uid(f"{case} series")
    ds.SeriesNumber = 1
    ds.BodyPartExamined = "PELVIS"  # unpaired, so no Laterality
    ds.SeriesDescription = f"PSFHS case {case}"
    # General Equipment
    ds.Manufacturer = ""
    ds.SoftwareVersions = "ipp-seg scripts/make_sample_data.py"
    # General Image / US Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ""
    ds.ContentTime = ""
    ds.ImageType = ["DERIVED", "PRIMARY", "OBSTETRICAL", "0001"]  # value 4: 2-D imaging only
    ds.DerivationDescription = (
        f"Frame {case} of the PSFHS dataset (doi:10.1038/s41597-024-03266-4, CC BY 4.0), "
        f"resized to {columns}x{rows} by its authors; calibration of {spacing_mm} mm/px is "
        "illustrative, not measured"
    )
    ds.ImageComments = f"Illustrative spacing {spacing_mm} mm per pixel; not the true calibration"
    ds.BurnedInAnnotation = "NO"
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    # US Region Calibration: one 2-D tissue region covering the frame, in cm per pixel.
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = columns - 1  # inclusive
    region.RegionLocationMaxY1 = rows - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    delta_cm = round(spacing_mm / 10.0, 12)  # 0.035, not 0.034999999999999996
    region.PhysicalDeltaX = delta_cm
    region.PhysicalDeltaY = delta_cm
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psfhs", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "sample_data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not (args.psfhs / "image_mha").is_dir():
        logger.error("PSFHS images not found under %s (expected image_mha/NNNNN.mha)", args.psfhs)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    for case in PNG_CASES:
        target = args.out / f"psfhs_{case}.png"
        write_png(target, psfhs_frame(args.psfhs, case))
        logger.info("wrote %s", target)

    pixels = psfhs_frame(args.psfhs, DICOM_CASE)
    target = args.out / f"psfhs_{DICOM_CASE}_us.dcm"
    ds = ultrasound_dataset(pixels, DICOM_CASE, SAMPLE_SPACING_MM)
    pydicom.dcmwrite(target, ds, enforce_file_format=True)
    logger.info("wrote %s", target)

    # Read it back through the package: the pixels and the stated spacing must survive.
    check = read_frame(target)
    if not np.array_equal(check.pixels, pixels) or not np.allclose(check.spacing_mm, SAMPLE_SPACING_MM, rtol=1e-9):
        logger.error("%s does not read back as written", target)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
