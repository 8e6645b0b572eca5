"""msrcnn.report (the command experiments/report.py): the paper's tables from sweep directories (fake
runs; one real sweep, slow)."""

import csv
import dataclasses
import io
import json

import pytest

import msrcnn.report as report
from exp_helpers import TINY, fake_results, fake_run, run_script
from msrcnn.models.backbones import BACKBONES
from msrcnn.models.maskiou import INPUT_DESIGNS, TRAIN_TARGETS
from msrcnn.models.roi_heads import MaskIoUConfig
from msrcnn.report.paper import ABLATIONS, BACKBONE_LABELS, TABLE1_BACKBONES, TABLE2_BACKBONES


def table4_sweep(root, designs=("concat", "multiply"), name="table4_input", finished=True):
    for k, design in enumerate(designs):
        fake_run(
            root / str(k),
            [f"head.input={design}"],
            {"experiment_name": name, "head": {"input": design}},
            fake_results(segm=20.0 + k, segm_cls=18.0) if finished or k == 0 else None,
        )
    return root


def rows_of(table):
    return {row[0]: row[1:] for row in table.rows}


def test_partial_table4_sweep_shows_missing_rows_and_the_mask_rcnn_row(tmp_path):
    runs = report.find_runs([table4_sweep(tmp_path)])
    assert report.detect_tables(runs) == [4]
    table = report.build_table(4, runs)
    rows = rows_of(table)
    assert rows["(a) concat"] == [20.0, 29.3, 40.0, 46.9, 19.0, 31.3, None, "baseline"]  # the default row
    assert rows["(b) multiply"][:2] == [21.0, 29.1]
    assert rows["(c) concat_all"][0] == "missing" and rows["(d) concat_highres"][0] == "missing"
    baseline = next(v for k, v in rows.items() if k.startswith("Mask R-CNN"))
    assert baseline[:2] == [18.0, 27.7]  # segm_cls of the concat run beside the paper's Mask R-CNN
    md = report.render(table, "md")
    assert "| (c) concat_all | missing | 29.1 |" in md and "segm_cls" in md


def test_a_run_without_results_is_missing_and_named(tmp_path):
    runs = report.find_runs([table4_sweep(tmp_path, finished=False)])
    table = report.build_table(4, runs)
    assert rows_of(table)["(b) multiply"][0] == "missing"
    assert any("no results.json" in note and str(tmp_path / "1") in note for note in table.notes)
    (tmp_path / "1" / "failed.json").write_text("{}")  # what a multirun records for a failed job
    table = report.build_table(4, report.find_runs([tmp_path]))
    assert rows_of(table)["(b) multiply"][0] == "missing"
    assert any("failed" in note and str(tmp_path / "1") in note for note in table.notes)


def test_table_is_detected_from_swept_keys_of_a_demo_sweep(tmp_path):
    for k, target in enumerate(["target_class", "all_classes"]):
        fake_run(
            tmp_path / str(k),
            ["experiment=demo", f"head.target={target}"],
            {"experiment_name": "demo", "head": {"target": target}},
            fake_results(10.0 + k),
        )
    runs = report.find_runs([tmp_path])
    assert report.detect_tables(runs) == [5]
    rows = rows_of(report.build_table(5, runs))
    assert rows["(2) all_classes"][:2] == [11.0, 24.5] and rows["(3) positive_classes"][0] == "missing"


def test_a_sweep_with_one_run_is_detected_from_multirun_yaml(tmp_path):
    fake_run(
        tmp_path / "0",
        ["experiment=demo", "head.tau=0.3"],
        {"experiment_name": "demo", "head": {"tau": 0.3}},
        fake_results(12.0),
    )
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - experiment=demo\n    - head.tau=0.3,0.5\n"
    )
    runs = report.find_runs([tmp_path])
    assert report.detect_tables(runs) == [6]
    rows = rows_of(report.build_table(6, runs))
    assert rows["tau 0.3"][:2] == [12.0, 29.2] and rows["tau 0.0"][0] == "missing"


def test_table1_has_mask_rcnn_class_score_and_ms_rows_with_box_ap(tmp_path):
    for k, (backbone, head) in enumerate(
        [("r18_fpn", "maskiou"), ("r18_fpn", "none"), ("r50_fpn", "maskiou")]
    ):
        fake_run(
            tmp_path / str(k),
            [f"+experiment@_global_=table_row_{backbone}", f"head={head}"],
            {"experiment_name": "table1_backbones", "backbone": {"name": backbone}, "head": {"name": head}},
            fake_results(segm=25.0 + k, segm_cls=24.0, bbox=30.0 + k, head=head),
        )
    runs = report.find_runs([tmp_path])
    assert report.detect_tables(runs) == [1]
    table = report.build_table(1, runs)
    by_model = {(row[0], row[1]): row[2:] for row in table.rows}
    assert by_model[("R18-FPN", "Mask R-CNN")][:2] == [24.0, 27.7]  # the head=none run's segm
    assert by_model[("R18-FPN", "Mask R-CNN")][6:8] == [31.0, 31.2]  # and its box AP
    assert by_model[("R18-FPN", "MS R-CNN")][:2] == [25.0, 29.3]
    assert by_model[("R18-FPN", "MS R-CNN ranked by class score (segm_cls)")][:2] == [24.0, None]
    assert by_model[("R50-FPN", "Mask R-CNN")][0] == "missing"
    assert by_model[("R101-FPN", "MS R-CNN")][0] == "missing"
    assert len(table.header) == 2 + 12 + 1  # and the mask AP difference to the backbone's Mask R-CNN


def test_table7_from_any_sweep_uses_the_oracle_and_pearson(tmp_path):
    table4_sweep(tmp_path)
    table = report.build_table(7, report.find_runs([tmp_path]))
    r18 = rows_of(table)["R18-FPN"]
    # Mask R-CNN (segm_cls stand-in, marked), MS R-CNN, oracle, Pearson r, each beside the paper's.
    assert r18[:-2] == [18.0, 27.7, 20.0, 29.3, 22.0, 31.5, 0.5, 0.74] and r18[0].mark == "\u2020"
    assert r18[-2] is None  # no gain interval in these results
    assert (r18[-1].diff, r18[-1].se) == (2.0, None)  # MS R-CNN - Mask R-CNN; one seed: no SE
    assert rows_of(table)["R101 DCN+FPN"][2] == "missing"
    text = report.render(table, "text")
    assert "0.500" in text and "0.740" in text and "segm_cls" in text


def test_csv_has_one_header_and_full_precision(tmp_path):
    out = report.report([table4_sweep(tmp_path)], fmt="csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:6] == ["table", "input design", "AP", "AP sd", "AP n", "AP (paper)"]
    assert rows[1][:6] == ["4", "(a) concat", "20.0", "", "1", "29.3"]  # one seed: no sd
    assert len({len(r) for r in rows}) == 1


def test_table3_prints_the_papers_test_dev_numbers(tmp_path):
    table = report.build_table(3, report.find_runs([table4_sweep(tmp_path)]))
    assert ["R101 DCN+FPN", "MS R-CNN", 39.6, 60.7, 43.1, 18.8, 41.5, 56.2] in table.rows


def test_cli_errors_clearly_on_a_directory_without_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no runs found" in err and str(tmp_path / "empty") in err
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_cli_asks_for_the_table_when_it_cannot_tell(tmp_path, capsys):
    fake_run(tmp_path / "run", ["experiment=demo"], {"experiment_name": "demo"}, fake_results(10.0))
    assert report.main([str(tmp_path / "run")]) == 2
    assert "--table" in capsys.readouterr().err
    assert report.main([str(tmp_path / "run"), "--table", "7", "--format", "text"]) == 0
    assert "R18-FPN" in capsys.readouterr().out


@pytest.mark.slow
def test_a_real_cpu_sweep_renders(tmp_path, shapes_dir):
    """``python src/train.py -m experiment=demo head.input=concat,multiply`` (TINY), then the report CLI."""
    sweep = tmp_path / "sweep"
    run_script(
        "train.py",
        "-m",
        *TINY,
        "head.input=concat,multiply",
        f"paths.data_dir={shapes_dir}",
        f"hydra.sweep.dir={sweep}",
    )
    assert json.loads((sweep / "1" / "results.json").read_text())["global_step"] == 2
    proc = run_script("experiments/report.py", str(sweep), "--format", "md")
    assert "Table 4" in proc.stdout and "| (c) concat_all | missing |" in proc.stdout
    assert "| (b) multiply | " in proc.stdout and "| (b) multiply | missing" not in proc.stdout
    text = run_script("experiments/report.py", str(sweep), "--table", "7", "--format", "text").stdout
    assert "R18-FPN" in text


def test_gain_intervals_per_seed_in_md_and_csv(tmp_path):
    """Each seed's gain interval is listed with how many exclude 0 (no mean of the bounds)."""
    intervals = [(1.09, 0.2, 2.0), (-0.47, -1.5, 0.6), (1.15, 0.1, 2.2)]
    for seed, gain in enumerate(intervals):
        fake_run(
            tmp_path / str(seed),
            [f"seed={seed}"],
            {"experiment_name": "table7_upper_bound", "seed": seed},
            fake_results(segm=20.0, segm_cls=19.0, gain_interval=gain),
        )
    table = report.build_table(7, report.find_runs([tmp_path]))
    md = report.render(table, "md")
    assert "| gain 95% interval |" in md
    assert "2/3 above 0: +1.09 [+0.20, +2.00]; -0.47 [-1.50, +0.60]; +1.15 [+0.10, +2.20]" in md
    rows = list(csv.DictReader(io.StringIO(report.render(table, "csv"))))
    r18 = next(r for r in rows if r["backbone"] == "R18-FPN")
    assert (
        r18["gain 95% interval above 0"],
        r18["gain 95% interval below 0"],
        r18["gain 95% interval n"],
    ) == (
        "2",
        "0",
        "3",
    )
    assert r18["gain 95% interval per seed"] == "1.09 [0.2, 2];-0.47 [-1.5, 0.6];1.15 [0.1, 2.2]"


def test_scoring_table_compares_head_samples_per_configuration(tmp_path):
    """A head.samples sweep is reported per configuration: the paper's positives first, the gain's
    intervals per seed, the correlations, and the gain's difference with its SE; Tables 4-7 ignore it."""
    gains = {
        "positives": [(0.2, -0.8, 1.1), (-0.4, -1.3, 0.5)],
        "detections": [(1.5, 0.4, 2.6), (1.1, 0.2, 2.0)],
    }
    k = 0
    for samples in ("detections", "positives"):
        for seed, gain in enumerate(gains[samples]):
            fake_run(
                tmp_path / str(k),
                [f"head.samples={samples}", f"seed={seed}"],
                {"experiment_name": "custom_cpu", "seed": seed, "head": {"samples": samples}},
                fake_results(segm=20.0 + gain[0], segm_cls=20.0, gain_interval=gain, pearson=0.5 + 0.1 * k),
            )
            k += 1
    runs = report.find_runs([tmp_path])
    assert report.detect_tables(runs) == [report.SCORING]
    table = report.build_table(report.SCORING, runs)
    labels = [row[0] for row in table.rows]
    assert labels == ["head.samples=positives", "head.samples=detections"]
    md = report.render(table, "md")
    assert "0/2 above 0: +0.20 [-0.80, +1.10]; -0.40 [-1.30, +0.50]" in md
    assert "2/2 above 0: +1.50 [+0.40, +2.60]; +1.10 [+0.20, +2.00]" in md
    pearson = table.header.index("Pearson r, MaskIoU (all)")
    assert table.rows[1][pearson] == pytest.approx(0.55) and table.rows[0][pearson] == pytest.approx(0.75)
    diff = table.rows[1][-1]
    assert diff.diff == pytest.approx(1.3 - (-0.1))
    rows = list(csv.DictReader(io.StringIO(report.render(table, "csv"))))
    assert [r["table"] for r in rows] == ["scoring", "scoring"]
    assert rows[1]["gain 95% interval above 0"] == "2"
    # the paper's ablation tables keep the paper's head: a detections run is not their default row
    assert not report.at_defaults(runs[0])
    assert report.main([str(tmp_path), "--table", "scoring", "--format", "text"]) == 0


def test_the_reports_defaults_and_row_labels_follow_the_code():
    """The head's defaults are MaskIoUConfig's (stated once, in the code), and the report labels every
    choice the code defines: a renamed or added input design, target or backbone cannot go unlabelled."""
    config = MaskIoUConfig()
    assert report.HEAD_DEFAULTS == {
        f"head.{f.name}": getattr(config, f.name)
        for f in dataclasses.fields(MaskIoUConfig)
        if f"head.{f.name}" in report.HEAD_DEFAULTS
    }
    assert set(report.HEAD_DEFAULTS) == {"head.input", "head.target", "head.samples", "head.tau"}
    assert list(ABLATIONS[4][2]) == list(INPUT_DESIGNS) and list(ABLATIONS[5][2]) == list(TRAIN_TARGETS)
    assert all(key in report.HEAD_DEFAULTS for key, _, _ in ABLATIONS.values())
    assert list(BACKBONE_LABELS) == list(BACKBONES)
    assert TABLE1_BACKBONES | TABLE2_BACKBONES <= set(BACKBONES)
