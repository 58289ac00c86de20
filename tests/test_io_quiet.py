"""The libraries' warnings silenced while ipp-seg reads, safely for threads (a library user's pass:
two threads reading at once left a pydicom filter installed for good, and ITK's warnings off)."""

from __future__ import annotations

import threading
import warnings

import SimpleITK as sitk

from ipp_seg.io import read_frame
from ipp_seg.io.quiet import itk_warnings_silenced, pydicom_warnings_silenced


def _overlapping(silenced, inside_alone) -> list:
    """Thread A enters, B enters, A leaves while B is still in, then B leaves; what
    ``inside_alone()`` says while B is the only one in."""
    a_in, b_in, a_out = (threading.Event() for _ in range(3))
    seen = []

    def a() -> None:
        with silenced():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with silenced():
            b_in.set()
            a_out.wait(5)
            seen.append(inside_alone())

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen


def test_pydicom_filter_holds_while_any_thread_reads_and_goes_with_the_last():
    before = list(warnings.filters)
    seen = _overlapping(pydicom_warnings_silenced,
                        lambda: any(f[0] == "ignore" and f[3] is not None and f[3].pattern.startswith("pydicom")
                                    for f in warnings.filters))
    assert seen == [True]  # (catch_warnings: A's exit had taken B's filter away)
    assert warnings.filters == before  # (catch_warnings: B's exit had put A's filter back for good)


def test_a_filter_another_thread_adds_meanwhile_stays():
    before = list(warnings.filters)
    try:
        with pydicom_warnings_silenced():
            warnings.filterwarnings("ignore", message="a filter of the caller's own")
        assert warnings.filters[0][1].pattern == "a filter of the caller's own"
        assert len(warnings.filters) == len(before) + 1
    finally:
        warnings.filters[:] = before


def test_itk_warnings_stay_off_while_any_thread_reads_and_come_back_with_the_last():
    assert sitk.ProcessObject_GetGlobalWarningDisplay()
    seen = _overlapping(itk_warnings_silenced, sitk.ProcessObject_GetGlobalWarningDisplay)
    assert seen == [False]
    assert sitk.ProcessObject_GetGlobalWarningDisplay()


def test_threads_reading_scans_leave_the_process_as_it_was(sample_dicom, psfhs_dir):
    before = list(warnings.filters)
    scans = [sample_dicom, *sorted((psfhs_dir / "image_mha").glob("*.mha"))[:4]]

    def read() -> None:
        for _ in range(5):
            for scan in scans:
                read_frame(scan)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert warnings.filters == before and sitk.ProcessObject_GetGlobalWarningDisplay()


def test_a_filter_equal_to_the_readers_that_was_there_stays(sample_dicom):
    # A QA pass: adding an equal filter takes the first away in Python, and taking the readers' own away after had
    # left none: the command line's for-good filter (quiet_dicom_libraries) was gone after the first DICOM read, and
    # a pydicom warning quoting a patient's name printed again. A caller's simplefilter("ignore") likewise.
    from ipp_seg import quiet_dicom_libraries
    from ipp_seg.io.quiet import every_warning_silenced

    before = list(warnings.filters)
    try:
        quiet_dicom_libraries()
        installed = list(warnings.filters)
        read_frame(sample_dicom)
        assert warnings.filters == installed
        warnings.simplefilter("ignore")
        mine = list(warnings.filters)
        with every_warning_silenced(), pydicom_warnings_silenced():
            pass
        assert warnings.filters == mine
        # One made equal to the readers' while they hold theirs: the caller's stays.
        warnings.filters[:] = before
        with pydicom_warnings_silenced():
            warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        assert warnings.filters[0][3].pattern == r"pydicom(\.|$)" and len(warnings.filters) == len(before) + 1
    finally:
        warnings.filters[:] = before


def test_a_header_value_pydicom_would_quote_stays_off_stderr(tmp_path, sample_dicom):
    # The QA pass's case, end to end: an unknown character set named after the patient, read and written into a SEG.
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    ds.SpecificCharacterSet = "MUELLER^JUERGEN"
    scan = tmp_path / "scan.dcm"
    ds.save_as(scan)
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(scan), "--out", str(tmp_path / "out"),
                          "--dicom-seg", "--dicom-sr"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode in (0, 1), run.stderr
    assert "MUELLER" not in run.stderr and "MUELLER" not in run.stdout


def test_the_readers_filter_holds_before_a_callers_always(tmp_path, sample_dicom):
    # A second QA pass: quiet_dicom_libraries() and then warnings.simplefilter("always") (a notebook's usual
    # order): the readers, finding their filter there, added none, and "always", first, let a warning quoting the
    # patient's name through.
    import pydicom

    from ipp_seg import quiet_dicom_libraries

    ds = pydicom.dcmread(sample_dicom)
    ds.SpecificCharacterSet = "MUELLER^JUERGEN"
    scan = tmp_path / "scan.dcm"
    ds.save_as(scan)
    before = list(warnings.filters)
    try:
        quiet_dicom_libraries()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mine = list(warnings.filters)
            read_frame(scan)
            assert warnings.filters == mine  # (the caller's filters as they were)
        assert not [w for w in caught if "MUELLER" in str(w.message)]
    finally:
        warnings.filters[:] = before
