"""ipp_seg.io.overlay: the measurement picture drawn on a frame."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ipp_seg.io import write_overlay_png
from ipp_seg.io.overlay import FH_COLOUR, PS_COLOUR, drawn_size, overlay_scale, overlay_title, render_overlay
from ipp_seg.measure import Landmarks, Measurement, measure_progress

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/psfhs"


def synthetic_mask(head_centre=(150, 150)) -> np.ndarray:
    """256 x 256: a tilted PS ellipse near the top, a round head below-right of it."""
    mask = np.zeros((256, 256), np.uint8)
    cv2.ellipse(mask, (90, 60), (40, 12), 20, 0, 360, 1, -1)
    cv2.circle(mask, head_centre, 60, 2, -1)
    return mask


def frame() -> np.ndarray:
    return np.full((256, 256), 60, np.uint8)


def image_part(rendered: np.ndarray, shape=(256, 256)) -> np.ndarray:
    s = overlay_scale(shape)
    return rendered[: shape[0] * s, : shape[1] * s]


def hue_fraction(pixels: np.ndarray, colour) -> float:
    """Fraction of pixels whose colour direction matches ``colour`` (translucent tint on grey)."""
    grey = 60.0
    diff = pixels.astype(np.float64) - grey
    target = np.asarray(colour, np.float64) - grey
    cos = (diff @ target) / (np.linalg.norm(diff, axis=-1) * np.linalg.norm(target) + 1e-9)
    return float(np.mean(cos > 0.98))


def test_shape_dtype_and_upscale():
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    out = render_overlay(frame(), mask, m)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    s = overlay_scale(mask.shape)
    assert s == 2  # a 256-pixel frame is drawn at 512
    assert out.shape[1] == 256 * s
    assert out.shape[0] > 256 * s  # the text panel is appended below


def test_the_panel_says_research_software_not_for_diagnosis(monkeypatch):
    # A QA auditor's pass: an overlay travels alone (a slide, a report), and only the README said what made it.
    import ipp_seg.io.overlay as overlay_module

    drawn = []
    real = overlay_module._put_text
    monkeypatch.setattr(overlay_module, "_put_text", lambda canvas, text, *a: drawn.append(text) or real(canvas, text,
                                                                                                        *a))
    mask = synthetic_mask()
    render_overlay(frame(), mask, measure_progress(mask, (0.3, 0.3)), title="scan.dcm", model="dssau-net-s")
    assert " ".join(drawn).count("ipp-seg: research software, not for diagnosis") == 1


def test_large_frame_is_not_enlarged():
    assert overlay_scale((600, 800)) == 1
    mask = np.zeros((600, 800), np.uint8)
    out = render_overlay(np.zeros((600, 800), np.float32), mask, measure_progress(mask))
    assert out.shape[1] == 800 and out.shape[0] > 600


def test_mask_colours_where_the_masks_are():
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    img = image_part(render_overlay(frame(), mask, m))
    big = cv2.resize(mask, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    # Erode so outlines and the drawn geometry near the boundary do not count.
    inner = {
        lab: cv2.erode((big == lab).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) for lab in (1, 2)
    }
    assert hue_fraction(img[inner[2]], FH_COLOUR) > 0.9
    assert hue_fraction(img[inner[1]], PS_COLOUR) > 0.5  # the PS carries the axis line
    assert hue_fraction(img[inner[2]], PS_COLOUR) < 0.05
    # Without the geometry, everything off the masks stays the frame's grey.
    plain = image_part(render_overlay(frame(), mask, replace(m, landmarks=Landmarks())))
    background = cv2.dilate((big > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    background[:8, :] = background[-8:, :] = False
    background[:, :8] = background[:, -8:] = False  # the status frame
    assert np.all(plain[background] == 60)


def test_geometry_drawn_at_landmarks():
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    assert m.aop_deg is not None and m.hsd_mm is not None
    plain = render_overlay(frame(), mask, replace(m, landmarks=Landmarks()))
    full = render_overlay(frame(), mask, m)
    changed = np.any(full != plain, axis=-1)
    lm = m.landmarks
    for point in (lm.ps_inferior_end, lm.ps_superior_end, lm.fh_tangent_point, lm.hsd_point):
        x, y = (round(float(c)) for c in (np.asarray(point) + 0.5) * 2 - 0.5)
        assert changed[y - 2 : y + 3, x - 2 : x + 3].any()


def test_aop_over_180_arc_goes_the_long_way():
    mask = np.zeros((256, 256), np.uint8)
    cv2.ellipse(mask, (90, 90), (40, 12), -15, 0, 360, 1, -1)
    cv2.circle(mask, (200, 95), 45, 2, -1)
    m = measure_progress(mask, (0.3, 0.3))
    assert m.aop_deg is not None and m.aop_deg > 180
    plain = render_overlay(frame(), mask, replace(m, aop_deg=None))
    full = render_overlay(frame(), mask, m)
    arc = np.any(image_part(full) != image_part(plain), axis=-1)
    inf = (np.asarray(m.landmarks.ps_inferior_end) + 0.5) * 2 - 0.5
    ys, xs = np.nonzero(arc)
    # An arc over 180 deg turning from the axis (left) through below reaches the far side:
    # its pixels lie both left of, right of and below the vertex.
    below = ys > inf[1] + 20
    assert np.any(below & (xs < inf[0] - 20)) and np.any(below & (xs > inf[0] + 20))


def test_the_arc_of_a_measurement_on_the_stored_grid_is_drawn_there():
    """Pixels more than 4:1 (a damaged calibration): the angle is measured on the stored grid,
    and its arc is drawn there too, not stretched by the spacing the measurement set aside."""
    mask = synthetic_mask()

    def arc(m):
        return np.any(image_part(render_overlay(frame(), mask, m)) !=
                      image_part(render_overlay(frame(), mask, replace(m, aop_deg=None))), axis=-1)

    on_grid, skewed = measure_progress(mask, None), measure_progress(mask, (0.3, 3.0))
    assert "spacing_implausible" in skewed.reasons and skewed.aop_deg == pytest.approx(on_grid.aop_deg)
    # (Drawn as doubtful, as pixel_aspect_implausible puts the angle in doubt: compared with the same doubt.)
    assert np.array_equal(arc(skewed), arc(replace(on_grid, reasons=skewed.reasons, status=skewed.status)))


def test_failed_measurement_still_renders_status():
    mask = synthetic_mask()
    mask[mask == 2] = 0
    m = measure_progress(mask)
    assert m.status == "failed"
    out = render_overlay(frame(), mask, m, title="case x")
    img = image_part(out)
    panel = out[img.shape[0] :]
    assert panel.shape[0] > 0
    # Red status text in the panel and a red frame around the image.
    red = (panel[..., 0] > 200) & (panel[..., 1] < 150) & (panel[..., 2] < 150)
    assert red.sum() > 50
    assert np.all(img[0, :, 0] > 200) and np.all(img[0, :, 1] < 150)
    ok = replace(m, status="ok", reasons=())
    assert not np.array_equal(render_overlay(frame(), mask, ok), out)


def test_a_failed_measurement_draws_no_axis_tangent_or_end_whatever_landmarks_it_holds():
    # A clinician's pass: a noise frame's overlay read "FAILED ... AoP n/a" beside the PS axis, the tangent, the
    # HSD line and their legend, from which an angle can be read with a protractor. A Measurement built by hand
    # with landmarks and status failed draws its masks and status alone, as one the measurement failed does.
    mask = synthetic_mask()
    measured = measure_progress(mask, (0.3, 0.3))
    assert measured.landmarks.ps_inferior_end is not None
    failed = replace(measured, aop_deg=None, hsd_mm=None, hsd_px=None, status="failed",
                     reasons=("anatomy_unrecognised",))
    bare = replace(failed, landmarks=Landmarks())
    assert np.array_equal(render_overlay(frame(), mask, failed), render_overlay(frame(), mask, bare))
    assert not np.array_equal(render_overlay(frame(), mask, replace(measured, status="warning")),
                              render_overlay(frame(), mask, replace(measured, status="warning",
                                                                    landmarks=Landmarks())))
    # Nor its values in the panel: "AoP 146.2° HSD 5.5 mm" had stood above "FAILED" (an output review). A failed
    # Measurement holds none, however it was made, so the CSV row and JSON report give none either.
    valued = replace(measured, status="failed", reasons=("anatomy_unrecognised", "aop_out_of_range"))
    assert valued.aop_deg is None and valued.hsd_mm is None and valued.landmarks == Landmarks()
    assert valued.reasons == ("anatomy_unrecognised",)  # nor warnings on values it has not
    assert valued.to_dict()["aop_deg"] is None
    assert np.array_equal(render_overlay(frame(), mask, valued), render_overlay(frame(), mask, bare))


def test_the_legend_names_the_inferior_end_marker_only_where_one_is_drawn():
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    without_ps = replace(m, landmarks=replace(m.landmarks, ps_inferior_end=None))

    def axis_yellow_in_panel(measurement):
        out = render_overlay(frame(), mask, measurement)
        panel = out[image_part(out).shape[0]:]
        return int(((panel[..., 0] > 230) & (panel[..., 1] > 215) & (panel[..., 2] < 40)).sum())

    assert axis_yellow_in_panel(m) > 0  # the marker's yellow centre in the legend
    assert axis_yellow_in_panel(without_ps) == 0


def test_the_lines_are_edged_and_named_and_the_hsd_is_dashed():
    """A deuteranope sees the AoP's yellow and the HSD's green alike, and neither stood out on bright
    bone: the lines have a dark edge, the HSD is dashed, and the legend names both as drawn."""
    from ipp_seg.io.overlay import _HSD_COLOUR

    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    assert m.hsd_mm is not None
    bright = np.full((256, 256), 250, np.uint8)  # the lines over bright echoes
    out = render_overlay(bright, mask, replace(m, landmarks=replace(m.landmarks, hsd_point=None)))
    with_hsd = render_overlay(bright, mask, m)
    image = image_part(with_hsd)
    panel = with_hsd[image.shape[0]:]
    dark = (image.max(axis=2) < 40)
    assert dark.sum() > 200  # the edges, where the frame is bright everywhere
    green = np.all(np.abs(panel.astype(int) - _HSD_COLOUR) < 30, axis=2)
    # The legend's HSD swatch is dashed: along its row, green runs broken by gaps.
    row = green[green.sum(axis=1).argmax()]
    runs = np.flatnonzero(np.diff(row.astype(np.int8)) == 1)
    assert len(runs) >= 2
    # No HSD point, no HSD entry (and a taller or equal panel with one: the legend may wrap).
    no_hsd_panel = out[image_part(out).shape[0]:]
    assert not np.all(np.abs(no_hsd_panel.astype(int) - _HSD_COLOUR) < 30, axis=2).any()
    assert panel.shape[0] >= no_hsd_panel.shape[0]


def test_the_border_flags_numbers_in_doubt_not_every_warning():
    # A clinician's pass: every uncalibrated PNG (spacing_unknown alone, its angle sound) had the amber border a
    # doubtful angle has, so the border told a doubtful frame from a sound one no longer.
    mask = synthetic_mask()
    m = measure_progress(mask, None)
    assert m.status == "warning" and m.reasons == ("spacing_unknown",) and not m.aop_doubtful
    amber = (255, 190, 0)

    def top_edge(measurement):
        return image_part(render_overlay(frame(), mask, measurement))[0]

    assert np.all(top_edge(m) == 60)  # no border: the numbers stand
    doubtful = replace(m, reasons=("spacing_unknown", "frame_saturated"))
    assert doubtful.aop_doubtful and np.all(top_edge(doubtful) == amber)
    hsd_only = replace(m, reasons=("hsd_unstable",))
    assert not hsd_only.aop_doubtful and hsd_only.hsd_doubtful and np.all(top_edge(hsd_only) == amber)
    # A failed measurement's border is doubled, so that it reads apart from amber in greyscale or to a red-green
    # colour-blind reader (an overlay reviewer's pass): a second line inside the first, which amber lacks.
    failed = replace(m, status="failed", reasons=("ps_missing",), aop_deg=None, hsd_px=None)
    red = (255, 120, 120)

    def column_from_left(measurement):
        image = image_part(render_overlay(frame(), mask, measurement))
        return image[image.shape[0] // 2, :40]

    assert np.all(column_from_left(failed)[:3] == red) and np.all(column_from_left(doubtful)[:3] == amber)
    inner = [x for x in range(8, 40) if np.array_equal(column_from_left(failed)[x], red)]
    assert inner and not any(np.array_equal(column_from_left(doubtful)[x], amber) for x in range(8, 40))


def test_the_panel_says_when_the_millimetres_come_from_a_spacing_given_by_hand():
    mask = synthetic_mask()
    calibrated = measure_progress(mask, (0.3, 0.3), spacing_source="ultrasound_region")
    given = replace(calibrated, spacing_source="given")
    a, b = render_overlay(frame(), mask, calibrated), render_overlay(frame(), mask, given)
    assert np.array_equal(image_part(a), image_part(b)) and not np.array_equal(a, b)  # the panel alone differs
    no_mm = measure_progress(mask, None)
    assert np.array_equal(render_overlay(frame(), mask, no_mm),
                          render_overlay(frame(), mask, replace(no_mm, spacing_source="given")))  # no mm shown


def test_ok_measurement_has_no_status_frame():
    mask = synthetic_mask()
    m = replace(measure_progress(mask, (0.3, 0.3)), status="ok", reasons=())
    img = image_part(render_overlay(frame(), mask, m))
    assert np.all(img[0, :] == 60)


def test_rejects_mismatched_shapes():
    mask = synthetic_mask()
    m = measure_progress(mask)
    with pytest.raises(ValueError):
        render_overlay(np.zeros((100, 100), np.uint8), mask, m)
    with pytest.raises(ValueError):
        render_overlay(np.zeros((256, 256, 4), np.uint8), mask, m)


def test_no_landmarks_no_values_renders(tmp_path):
    mask = np.zeros((64, 80), np.uint8)
    m = Measurement(
        None, None, None, None, None, "failed", ("ps_missing", "fh_missing"), "ellipse", "standard", None, Landmarks()
    )
    out = render_overlay(np.random.default_rng(0).integers(0, 255, (64, 80)).astype(np.uint8), mask, m)
    assert out.shape[1] == 80 * overlay_scale((64, 80))
    write_overlay_png(tmp_path / "o.png", out)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, out)


@pytest.mark.data
def test_real_case_renders():
    labels, images = DATA / "label_mha" / "04700.mha", DATA / "image_mha" / "04700.mha"
    if not labels.is_file() or not images.is_file():
        pytest.skip(f"shared PSFHS data not found at {DATA}")
    sitk = pytest.importorskip("SimpleITK")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(images)))[0]
    m = measure_progress(mask)
    out = render_overlay(pixels, mask, m, title="04700")
    assert out.shape[1] == 512 and out.dtype == np.uint8
    assert not np.array_equal(image_part(out), cv2.cvtColor(cv2.resize(pixels, None, fx=2, fy=2), cv2.COLOR_GRAY2RGB))


def test_pixels_that_are_not_square_are_drawn_square_so_right_angles_look_right():
    # Pixels 0.3 mm wide and 0.4 mm tall: drawn on the stored grid, the infrapubic line would
    # not look perpendicular to the PS axis, nor the angle like its label.
    mask = synthetic_mask(head_centre=(120, 170))
    m = measure_progress(mask, (0.3, 0.4))
    assert m.landmarks.hsd_point is not None
    out = render_overlay(frame(), mask, m)
    s = overlay_scale(mask.shape)
    width, height = 256 * s, round(256 * s * 0.4 / 0.3)
    assert out.shape[1] == width and out.shape[0] > height
    plain = render_overlay(frame(), mask, replace(m, landmarks=Landmarks()))
    changed = np.any(out[:height] != plain[:height], axis=-1)
    k = np.array([width / 256, height / 256])
    canvas = {name: (np.asarray(getattr(m.landmarks, name)) + 0.5) * k - 0.5
              for name in ("ps_inferior_end", "ps_superior_end", "hsd_point")}
    for p in canvas.values():
        x, y = (round(float(c)) for c in p)
        assert changed[y - 2: y + 3, x - 2: x + 3].any()
    axis = canvas["ps_superior_end"] - canvas["ps_inferior_end"]
    hsd = canvas["hsd_point"] - canvas["ps_inferior_end"]
    assert abs(np.degrees(np.arccos(axis @ hsd / np.linalg.norm(axis) / np.linalg.norm(hsd))) - 90) < 0.5
    # Square pixels, and a damaged calibration beyond 4:1, keep the stored grid's proportions.
    assert drawn_size((256, 256), (0.3, 0.3)) == (256 * s, 256 * s)
    assert drawn_size((256, 256), (0.1, 2.0)) == (256 * s, 256 * s)


def test_the_panel_says_method_orientation_tta_and_the_frame_of_a_cine():
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3), orientation="mirrored")
    plain, with_tta = render_overlay(frame(), mask, m), render_overlay(frame(), mask, m, tta=True)
    # The TTA note is drawn, on a line of its own where the values row has no room for it.
    assert plain.shape[1] == with_tta.shape[1] and plain.shape[0] <= with_tta.shape[0]
    assert np.any(plain != with_tta[:plain.shape[0]]) or plain.shape != with_tta.shape
    # The model that drew the masks has a row of its own: a saved overlay says whose reading it is.
    named = render_overlay(frame(), mask, m, model="dssau-net-paper")
    assert named.shape[0] > plain.shape[0] and named.shape[1] == plain.shape[1]
    assert np.any(named[plain.shape[0]:] != named[-1, -1])  # the extra row holds text, not blank panel
    assert overlay_title("cine.dcm", 3, 12) == "cine.dcm  frame 3 of 0-11"  # counted from 0, as the file names
    assert overlay_title("still.png", 0, 1) == "still.png"
    # A DICOM cine's frame also by the 1-based number a PACS viewer, the SEG and the SR give it.
    assert overlay_title("cine.dcm", 2, 3, dicom_frame_number=3) == "cine.dcm  frame 2 of 0-2 (DICOM frame 3)"
    # And its time after the cine's first frame, where its header gives one: the overlays of a loop read in time.
    assert overlay_title("cine.dcm", 2, 3, 3, frame_time_ms=66.7) == "cine.dcm  frame 2 of 0-2 (DICOM frame 3) at " \
        "0.0667 s"
    assert overlay_title("still.dcm", 0, 1, 1, frame_time_ms=0.0) == "still.dcm"
    # To the 0.001 ms a time is kept to where frames are closer than a ms (all had read "at 0.000 s").
    assert [overlay_title("c", 1, 4, frame_time_ms=t).split(" at ")[1] for t in (0.1, 0.0, 3_600_000.0, 12.5)] == [
        "0.0001 s", "0.000 s", "3600.000 s", "0.0125 s"]


def test_a_title_holding_bytes_that_are_not_utf8_is_drawn_escaped():
    # A Latin-1 file name reaches Python as lone surrogates, on which OpenCV's text drawing crashed the process.
    mask = synthetic_mask()
    m = measure_progress(mask, None)
    drawn = render_overlay(frame(), mask, m, title="M\udcfcller.png")
    assert np.array_equal(drawn, render_overlay(frame(), mask, m, title="M\\udcfcller.png"))


def test_a_title_in_letters_the_font_lacks_is_drawn_as_escapes_so_names_stay_apart():
    # OpenCV's Hershey font draws each Chinese character or emoji as "?": 张三.png and 李四.png
    # had both been captioned "??.png". Latin and Cyrillic letters it has are drawn as they are.
    mask = synthetic_mask()
    m = measure_progress(mask, None)
    first, second = (render_overlay(frame(), mask, m, title=name) for name in ("张三.png", "李四.png"))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, render_overlay(frame(), mask, m, title="\\u5f20\\u4e09.png"))
    assert not np.array_equal(render_overlay(frame(), mask, m, title="Müller.png"),
                              render_overlay(frame(), mask, m, title="M\\u00fcller.png"))


@pytest.mark.parametrize("width", [256, 512, 1024])
def test_a_label_pushed_against_an_edge_keeps_its_degree_sign_inside(width):
    """A label anchored beyond the top-right corner had lost its degree sign and outline there."""
    from ipp_seg.io.overlay import _label, _Style

    canvas = np.zeros((width // 2, width, 3), np.uint8)
    style = _Style(width)
    _label(canvas, "AoP 180.3\u00b0", (width + 50, -50), (255, 255, 0), style, 1.0, centre=True)
    inked = np.argwhere(canvas.any(axis=2))
    assert inked.size
    assert inked[:, 1].max() < width - 1 and inked[:, 0].min() > 0  # nothing touches the right or top edge
    assert canvas[:, -2:].max() == 0 and canvas[:2].max() == 0


def test_an_angle_a_warning_puts_in_doubt_is_labelled_so():
    """A frame upside down read "AoP 106.0" in the same label as a sound frame's 146.2."""
    from ipp_seg.measure.result import ANGLE_IN_DOUBT, REASONS

    mask = synthetic_mask()
    m = measure_progress(mask, (0.2, 0.2))
    assert m.status == "ok" and m.aop_deg is not None

    def label_ink(measurement) -> int:  # pixels of the axis' yellow: the arc, the lines and the AoP label
        img = image_part(render_overlay(frame(), mask, measurement))
        return int(((img[..., 0] > 240) & (img[..., 1] > 225) & (img[..., 2] < 60)).sum())

    plain = label_ink(m)
    doubted = label_ink(replace(m, status="warning", reasons=("sector_upside_down",)))
    assert doubted > plain + 40  # "AoP 146.2° (doubtful)": the longer label
    assert label_ink(replace(m, status="warning", reasons=("hsd_unstable",))) == plain  # the HSD's, not the angle's
    assert ANGLE_IN_DOUBT <= {code for code, (status, _) in REASONS.items() if status == "warning"}


@pytest.mark.parametrize("width", [256, 512, 1024])
def test_the_panels_values_stay_inside_it(width):
    """A mirrored frame measured with --tta whose angle is in doubt had its values row run off a
    512-pixel panel at "... orientation mirrored, mirror T"."""
    from ipp_seg.io.overlay import _PANEL_COLOUR, _Style, _text_panel

    m = replace(measure_progress(synthetic_mask(), (0.2, 0.2)), status="warning", orientation="mirrored",
                reasons=("orientation_doubtful", "spacing_implausible"))
    style = _Style(width)
    panel = _text_panel(width, m, "scan.png", style, True, "dssau-net-s")
    right_margin = panel[:, width - max(3, style.marker):]
    assert (right_margin == np.array(_PANEL_COLOUR, np.uint8)).all()  # no text reaches the edge
    # A long file name without spaces is cut into lines that fit (it had been clipped at the edge).
    named = _text_panel(width, m, "a_very_long_export_name_without_any_spaces_" * 3 + ".dcm", style, True, "m")
    assert (named[:, width - max(3, style.marker):] == np.array(_PANEL_COLOUR, np.uint8)).all()
    fewer_words = _text_panel(width, replace(m, reasons=()), "scan.png", style, False, "dssau-net-s")
    assert panel.shape[0] >= fewer_words.shape[0]


def test_a_dark_frame_is_shown_brightened_and_the_panel_says_so():
    # A clinician's pass: an under-gained frame's overlay was too dark to check the outlines against.
    mask = synthetic_mask()
    dark = np.full((256, 256), 12, np.uint8)
    dark[200:, :] = 20  # its brightest echoes: 20 of 255
    m = measure_progress(mask, (0.3, 0.3))
    as_recorded = render_overlay(dark, mask, m)
    warned = render_overlay(dark, mask, replace(m, status="warning", reasons=("frame_dark",)))
    corner = (slice(0, 40), slice(450, 512))  # background, clear of the masks and lines (drawn at 2x)
    assert np.all(image_part(as_recorded)[corner] == 12)
    assert np.all(image_part(warned)[corner] == 120)  # 12 x 200 / 20: the brightest echoes at 200
    assert warned.shape[0] > as_recorded.shape[0]  # a line more in the panel: "frame shown 10.0 times brighter"
    # By the brightest echoes the warning was judged by, where given (QA: grey bands beside the image had set the
    # whole frame's figure, and left it dark).
    banded = dark.copy()
    banded[:, :40] = 150
    by_box = render_overlay(banded, mask, replace(m, status="warning", reasons=("frame_dark",)), echoes=20.0)
    assert np.all(image_part(by_box)[corner] == 120)
    # Brightened only where the measurement says the frame is dark: a frame as dark without the code is as recorded.
    assert np.all(image_part(render_overlay(dark, mask, replace(m, reasons=("frame_saturated",))))[corner] == 12)


def test_a_float_frame_is_shown_on_its_own_scale():
    # QA: a float MHA of 0-1 values had its overlay black at full brightness.
    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    as_uint8 = image_part(render_overlay(frame(), mask, m))
    assert np.array_equal(image_part(render_overlay(frame().astype(np.float32) / 255, mask, m)), as_uint8)
    assert np.array_equal(image_part(render_overlay(frame().astype(np.float32), mask, m)), as_uint8)  # 0-255 floats
    wide = np.zeros((256, 256), np.float32)
    wide[:, 128:] = 4000.0  # a scale of its own: its lowest black, its highest white
    corners = image_part(render_overlay(wide, mask, m))
    assert np.all(corners[0, 0] == 0) and np.all(corners[0, -1] == 255)


def test_the_status_says_in_words_what_failed_a_frame_apart_from_its_other_warnings():
    # A clinical imaging scientist's pass: "FAILED: ps_too_small, spacing_unknown, ps_low_confidence" mixed the cause
    # with warnings that did not cause it, and a warned frame's codes said none of which doubted its AoP.
    from ipp_seg.io.overlay import status_lines

    failed = replace(measure_progress(synthetic_mask(), (0.3, 0.3)), aop_deg=None, hsd_mm=None, hsd_px=None,
                     status="failed", reasons=("spacing_unknown", "ps_too_small", "ps_low_confidence"))
    assert status_lines(failed) == [
        "FAILED: pubic symphysis too small to measure",
        "also: pixel spacing unknown: no distance in millimetres; network unsure of the symphysis it drew",
        "(codes: ps_too_small, spacing_unknown, ps_low_confidence)"]
    warned = replace(failed, status="warning", reasons=("spacing_unknown", "orientation_doubtful"))
    assert status_lines(warned)[0] == ("WARNING, AoP and HSD doubtful: frame may be displayed mirrored from the "
                                       "orientation assumed")
    assert status_lines(replace(failed, status="warning", reasons=("hsd_unstable",)))[0] == \
        "WARNING, HSD doubtful: infrapubic line grazes the head: HSD unstable"
    assert status_lines(replace(failed, status="warning", reasons=("spacing_unknown",))) == [
        "WARNING: pixel spacing unknown: no distance in millimetres", "(codes: spacing_unknown)"]
    assert status_lines(replace(failed, status="ok", reasons=())) == ["OK"]
    assert status_lines(replace(failed, reasons=("unreadable",)))[0] == "FAILED: unreadable"  # (a file's own code)


def test_the_hsd_label_leaves_the_tangent_clear_where_it_runs_close_to_the_infrapubic_line(monkeypatch):
    # Below about 120 deg the tangent runs near the HSD line: the label, straight past the HSD's end, had hidden
    # the tangent where it meets the skull (an output review: 7 of 14 frames with an HSD).
    import ipp_seg.io.overlay as overlay

    mask = synthetic_mask()
    m = measure_progress(mask, (0.3, 0.3))
    inferior, tangent, hsd_point = np.array([140.0, 40.0]), np.array([180.0, 120.0]), np.array([150.0, 100.0])
    close = replace(m, landmarks=replace(m.landmarks, ps_inferior_end=tuple(inferior), ps_superior_end=(80.0, 50.0),
                                         fh_tangent_point=tuple(tangent), hsd_point=tuple(hsd_point)))
    boxes = []
    real = overlay._put_text

    def noted(canvas, text, origin, colour, style, rel):
        if text.startswith("HSD") and canvas.shape[0] >= 512:
            tw, th, base = overlay._text_size(text, style, rel)
            boxes.append((origin[0], origin[1] - th, origin[0] + tw, origin[1] + base))
        return real(canvas, text, origin, colour, style, rel)

    monkeypatch.setattr(overlay, "_put_text", noted)
    render_overlay(frame(), mask, close)
    (x0, y0, x1, y1), = boxes
    to_canvas = lambda p: (p + 0.5) * 2 - 0.5  # noqa: E731 - 256 px drawn at 512
    a, b = to_canvas(inferior), to_canvas(tangent + 0.35 * (tangent - inferior))
    line = a + np.linspace(0, 1, 400)[:, None] * (b - a)
    assert not ((line[:, 0] >= x0 - 2) & (line[:, 0] <= x1 + 2) & (line[:, 1] >= y0 - 2) & (line[:, 1] <= y1 + 2)).any()
    hsd = a + np.linspace(0, 1, 400)[:, None] * (to_canvas(hsd_point) - a)
    assert not ((hsd[:, 0] >= x0) & (hsd[:, 0] <= x1) & (hsd[:, 1] >= y0) & (hsd[:, 1] <= y1)).any()


def test_an_overlay_is_written_compressed_losslessly(tmp_path):
    # OpenCV's default PNG coding (level 1, run lengths) had written 300 KB per 512 px overlay: 9 GB per 30,000.
    scan = cv2.imread(str(Path(__file__).resolve().parents[1] / "sample_data" / "psfhs_04700.png"),
                      cv2.IMREAD_GRAYSCALE)
    rgb = render_overlay(scan, synthetic_mask(), measure_progress(synthetic_mask(), (0.3, 0.3)))
    write_overlay_png(tmp_path / "o.png", rgb)
    default = len(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1])
    assert (tmp_path / "o.png").stat().st_size < 0.8 * default
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB), rgb)
