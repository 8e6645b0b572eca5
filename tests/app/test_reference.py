"""make train's last lines: a run placed in its preset's measured spread (msrcnn.app.reference)."""

import pytest

from msrcnn.app.reference import expected_at, format_reference, place, run_metrics

REFERENCE = {
    "source": "experiments/README.md",
    "points": [  # deliberately out of order: the code sorts by steps
        {"steps": 2200, "seeds": 3, "mask_ap": [50.0, 1.0], "gain": [2.0, 0.25], "pearson": [0.55, 0.02]},
        {"steps": 1100, "seeds": 3, "mask_ap": [40.0, 2.0], "gain": [1.0, 0.5], "pearson": [0.45, 0.04]},
    ],
}


def results(mask_ap, cls_ap, pearson):
    return {"segm": {"AP": mask_ap}, "segm_cls": {"AP": cls_ap}, "maskiou_pearson": pearson}


def test_run_metrics_reads_mask_ap_gain_and_pearson():
    assert run_metrics(results(40.2, 38.8, 0.54)) == pytest.approx(
        {"mask_ap": 40.2, "gain": 1.4, "pearson": 0.54}
    )
    assert run_metrics({"segm": {"AP": 1.0}}) == {"mask_ap": 1.0, "gain": None, "pearson": None}


def test_expected_at_a_measured_length_between_and_beyond():
    at_full, how = expected_at(REFERENCE["points"], 2200)
    assert at_full == {"mask_ap": (50.0, 1.0), "gain": (2.0, 0.25), "pearson": (0.55, 0.02)}
    assert how == "3 seeds at 2,200 steps"
    middle, how = expected_at(REFERENCE["points"], 1650)  # halfway: mean and sd interpolated
    assert middle["mask_ap"] == pytest.approx((45.0, 1.5)) and middle["gain"] == pytest.approx((1.5, 0.375))
    assert how.startswith("interpolated between 3 seeds at 1,100 steps and 3 seeds at 2,200")
    short, how = expected_at(REFERENCE["points"], 600)  # shorter than any measured run: the nearest
    assert short["mask_ap"] == (40.0, 2.0) and "nearest" in how
    long, how = expected_at(REFERENCE["points"], 5000)
    assert long["mask_ap"] == (50.0, 1.0) and "nearest" in how
    with pytest.raises(ValueError, match="empty"):
        expected_at([], 100)


def test_place_uses_two_standard_deviations():
    assert place(46.0, 50.0, 2.0) == "within" and place(45.9, 50.0, 2.0) == "below"
    assert place(54.1, 50.0, 2.0) == "above" and place(50.0, 50.0, 0.0) == "within"


def test_the_lines_name_each_figure_its_spread_and_a_verdict():
    ok = format_reference(REFERENCE, results(40.5, 39.3, 0.47), steps=1100)
    assert "3 seeds at 1,100 steps; experiments/README.md" in ok
    assert "mask AP (class x MaskIoU)    40.5  expected 36.0 to 44.0 (mean 40.0, sd 2.00): within" in ok
    assert "+1.20  expected +0.00 to +2.00" in ok and "0.470  expected 0.370 to 0.530" in ok
    assert ok.splitlines()[-1] == "this run (1,100 steps) is within the measured spread on every figure."
    bad = format_reference(REFERENCE, results(30.0, 31.0, 0.20), steps=2200)
    assert bad.count(": below") == 3
    assert "outside the measured spread on: mask AP (class x MaskIoU), mask scoring gain (AP)" in bad
    assert "make test" in bad
    missing = format_reference(REFERENCE, {"segm": {"AP": 50.0}}, steps=2200)
    assert "not computed by this run" in missing and "outside" in missing
