"""Seeds (issue 23): ``-m ... seed=0,1,2`` runs of one configuration are aggregated by
experiments/report.py (mean ± sd (n), the difference to the baseline with its standard error, marked
beyond two), and in W&B they form one group per configuration with ``seed`` in the run's config.

Hand-made run directories (``.hydra/config.yaml``, ``overrides.yaml``, ``results.json``) as in
test_exp_report.py; the W&B identity is computed from a real composed Hydra config, nothing is logged.
"""

import csv
import io
import math
import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from test_exp_report import rows_of

import msrcnn.report as report
from exp_helpers import CONF, fake_results, fake_run
from msrcnn.app.builders import build_logger
from msrcnn.app.schemas import validate
from msrcnn.app.wandb_runs import MAX_GROUP_CHARS, job_identity
from msrcnn.config.validate import to_plain

CONCAT = [40.0, 41.0, 42.0]  # mean 41, sd 1
MULTIPLY = [30.0, 30.5, 31.0]  # mean 30.5, sd 0.5: 10.5 below concat, SE 0.65 -> marked
CONCAT_ALL = [39.0, 45.0]  # mean 42, sd 4.24: 1.0 above concat, SE 3.06 -> not marked


def seed_sweep(root, rows, extra=None, start=0):
    """One run directory per (head.input, seed), numbered like a Hydra sweep; None: no results.json."""
    k = start
    for design, aps in rows.items():
        for seed, ap in enumerate(aps):
            fake_run(
                root / str(k),
                [f"head.input={design}", f"seed={seed}"],
                {"experiment_name": "table4_input", "seed": seed, "head": {"input": design}, **(extra or {})},
                None if ap is None else fake_results(ap, segm_cls=ap - 1.5),
            )
            k += 1
    return root


def test_the_seeds_of_a_configuration_are_one_row_with_mean_sd_and_n(tmp_path):
    seed_sweep(tmp_path, {"concat": CONCAT, "multiply": MULTIPLY, "concat_highres": [38.0, 39.0, 43.0]})
    table = report.build_table(4, report.find_runs([tmp_path]))
    rows = rows_of(table)
    concat = rows["(a) concat"][0]
    assert (concat, concat.sd, concat.n) == (41.0, 1.0, 3) and concat.values == (40.0, 41.0, 42.0)
    ap50 = rows["(b) multiply"][2]
    assert (ap50, ap50.sd, ap50.n) == (50.5, 0.5, 3)
    skewed = rows["(d) concat_highres"][0]  # the mean, not the median; the sample sd (n - 1)
    assert (skewed, skewed.sd) == (40.0, pytest.approx(math.sqrt(7)))
    # the Mask R-CNN stand-in (segm_cls) comes from the same three concat runs
    assert rows["Mask R-CNN ranking (segm_cls of the (a) concat run)"][0] == 39.5
    md = report.render(table, "md")
    assert "| (a) concat | 41.0 ± 1.0 (3) | 29.3 | 61.0 ± 1.0 (3) |" in md
    assert "mean ± sd (n finished seeds)" in md
    assert not any("configurations match" in n or "runs of seed" in n for n in table.notes)


def test_a_run_that_differs_in_more_than_the_seed_is_another_configuration(tmp_path):
    seed_sweep(tmp_path / "a", {"concat": CONCAT})
    longer = {"trainer": {"max_steps": 2000}}  # newer, so shown; the note names the difference
    seed_sweep(tmp_path / "b", {"concat": [50.0, 52.0]}, extra=longer)
    for k, run in enumerate(["a/0", "a/1", "a/2", "b/0", "b/1"]):
        os.utime(tmp_path / run / "results.json", (1e9 + k, 1e9 + k))
    table = report.build_table(4, report.find_runs([tmp_path]))
    concat = rows_of(table)["(a) concat"][0]
    assert (concat, concat.n) == (51.0, 2)
    assert any("2 configurations match" in n and "trainer.max_steps" in n for n in table.notes)
    # two runs of the same configuration and seed count once (the newer)
    seed_sweep(tmp_path / "c", {"concat": [60.0]}, extra=longer)
    table = report.build_table(4, report.find_runs([tmp_path]))
    concat = rows_of(table)["(a) concat"][0]
    assert (concat, concat.n) == (56.0, 2) and sorted(concat.values) == [52.0, 60.0]
    assert any("2 runs of seed 0" in n and str(tmp_path / "c" / "0") in n for n in table.notes)


def test_one_seed_has_no_sd_and_no_standard_error(tmp_path):
    seed_sweep(tmp_path, {"concat": [40.0], "multiply": [20.0]})  # 20 AP apart, but one run each
    table = report.build_table(4, report.find_runs([tmp_path]))
    rows = rows_of(table)
    multiply, diff = rows["(b) multiply"][0], rows["(b) multiply"][-1]
    assert (multiply, multiply.sd, multiply.n) == (20.0, None, 1)
    assert (diff.diff, diff.se, diff.marked) == (-20.0, None, False)
    md = report.render(table, "md")
    assert "| (b) multiply | 20.0 (1) | 29.1 |" in md and "| -20.00 (n/a) |" in md
    out = list(csv.DictReader(io.StringIO(report.render(table, "csv"))))
    assert (out[1]["AP"], out[1]["AP sd"], out[1]["AP n"]) == ("20.0", "", "1")
    assert (out[1]["AP diff"], out[1]["AP diff SE"], out[1]["AP diff > 2 SE"]) == ("-20.0", "", "False")


@pytest.mark.parametrize("failed", [False, True])
def test_a_missing_seed_is_not_counted_and_the_report_says_so(tmp_path, failed):
    seed_sweep(tmp_path, {"concat": [40.0, None, 42.0]})
    if failed:
        (tmp_path / "1" / "failed.json").write_text("{}")  # what a multirun records for a failed job
    table = report.build_table(4, report.find_runs([tmp_path]))
    concat = rows_of(table)["(a) concat"][0]
    assert (concat, concat.n, concat.sd) == (41.0, 2, math.sqrt(2))
    (note,) = [n for n in table.notes if str(tmp_path / "1") in n]
    assert ("failed" if failed else "no results.json") in note and "n = 2 of 3 seeds" in note
    assert "41.0 ± 1.4 (2)" in report.render(table, "text")
    # no seed finished: the row is missing, as with a single run
    seed_sweep(tmp_path / "none", {"concat": [None, None]})
    table = report.build_table(4, report.find_runs([tmp_path / "none"]))
    assert rows_of(table)["(a) concat"][0] == "missing" and rows_of(table)["(a) concat"][-1] == "baseline"


def test_a_clear_difference_is_marked_and_a_noisy_one_is_not(tmp_path, capsys):
    seed_sweep(tmp_path, {"concat": CONCAT, "multiply": MULTIPLY, "concat_all": CONCAT_ALL})
    table = report.build_table(4, report.find_runs([tmp_path]))
    rows = rows_of(table)
    assert rows["(a) concat"][-1] == "baseline"  # Table 4's baseline: the default input design
    clear, noisy = rows["(b) multiply"][-1], rows["(c) concat_all"][-1]
    assert clear.diff == -10.5 and clear.se == pytest.approx(math.sqrt(1 / 3 + 0.25 / 3)) and clear.marked
    assert noisy.diff == 1.0 and noisy.se == pytest.approx(math.sqrt(1 / 3 + 18 / 2)) and not noisy.marked
    assert rows["(d) concat_highres"][-1] is None  # no run: no difference
    md = report.render(table, "md")
    assert "| -10.50 (0.65) * |" in md and "| +1.00 (3.06) |" in md and "*: |diff| > 2 SE" in md
    assert report.main([str(tmp_path), "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert "-10.50 (0.65) *" in text and "+1.00 (3.06)\n" in text and "note: ours: mean ± sd" in text
    out = {r["input design"]: r for r in csv.DictReader(io.StringIO(report.render(table, "csv")))}
    assert (
        out["(b) multiply"]["AP diff > 2 SE"] == "True" and out["(c) concat_all"]["AP diff > 2 SE"] == "False"
    )
    assert float(out["(b) multiply"]["AP diff SE"]) == pytest.approx(clear.se)
    assert (out["(c) concat_all"]["AP sd"], out["(c) concat_all"]["AP n"]) == (str(math.sqrt(18)), "2")


def test_tables_1_and_7_compare_ms_rcnn_with_the_mask_rcnn_of_its_backbone(tmp_path):
    k = 0
    for head, aps in (("none", [30.0, 30.5, 31.0]), ("maskiou", [40.0, 41.0, 42.0])):
        for seed, ap in enumerate(aps):
            fake_run(
                tmp_path / str(k),
                [f"head={head}", f"seed={seed}"],
                {"experiment_name": "table1_backbones", "seed": seed, "head": {"name": head}},
                fake_results(segm=ap, segm_cls=ap if head == "none" else ap - 0.5, head=head),
            )
            k += 1
    runs = report.find_runs([tmp_path])
    table1 = {(r[0], r[1]): r for r in report.build_table(1, runs).rows}
    assert table1[("R18-FPN", "Mask R-CNN")][-1] == "baseline"
    assert table1[("R18-FPN", "MS R-CNN")][-1].diff == 10.5 and table1[("R18-FPN", "MS R-CNN")][-1].marked
    assert table1[("R50-FPN", "MS R-CNN")][-1] is None
    r18 = rows_of(report.build_table(7, runs))["R18-FPN"]
    assert r18[0] == 30.5 and r18[0].mark == "" and r18[-1].diff == 10.5 and r18[-1].marked


# --------------------------------------------------------------------------- W&B
@pytest.fixture
def hydra_job(tmp_path):
    """Sets Hydra's config as a ``-m`` job of the sweep ``task`` (its multirun.yaml) with ``overrides``."""
    saved = HydraConfig.instance().cfg

    def make(task, overrides, num=0, sweep_dir=None):
        sweep_dir = sweep_dir or tmp_path / "multirun" / "demo" / "2026-12-05_10-00-00"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml({"hydra": {"overrides": {"task": task}}}))
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        OmegaConf.update(cfg, "hydra.mode", "MULTIRUN")
        OmegaConf.update(cfg, "hydra.sweep.dir", str(sweep_dir))
        OmegaConf.update(cfg, "hydra.job.num", num)
        OmegaConf.update(cfg, "hydra.runtime.output_dir", str(sweep_dir / str(num)))
        HydraConfig.instance().set_config(cfg)
        return sweep_dir

    yield make
    HydraConfig.instance().cfg = saved


SEED_SWEEP = ["experiment=demo", "head.input=concat,multiply", "seed=0,1,2"]


def test_wandb_groups_the_seeds_of_a_configuration(hydra_job):
    groups = {}
    for num, (design, seed) in enumerate((d, s) for d in ("concat", "multiply") for s in (0, 1, 2)):
        sweep_dir = hydra_job(SEED_SWEEP, ["experiment=demo", f"head.input={design}", f"seed={seed}"], num)
        identity = job_identity("demo")
        assert identity.name == f"head.input={design} seed={seed}"  # each run keeps its own name
        assert f"seed={seed}" in identity.job["overrides"]
        groups.setdefault(design, set()).add(identity.group)
    assert groups == {d: {f"{sweep_dir} head.input={d}"} for d in ("concat", "multiply")}
    assert job_identity("demo", group="mine").group == "mine"  # logger.group still wins


def test_wandb_groups_by_sweep_without_a_seed_sweep_or_when_only_the_seed_varies(hydra_job):
    sweep_dir = hydra_job(
        ["experiment=demo", "head.input=concat,multiply", "seed=1"], ["head.input=multiply", "seed=1"]
    )
    assert job_identity("demo").group == str(sweep_dir)  # as before: the sweep
    sweep_dir = hydra_job(["experiment=demo", "seed=0,1,2"], ["experiment=demo", "seed=2"], 2)
    assert job_identity("demo").group == str(sweep_dir)  # one configuration: the sweep is the group


def test_wandb_group_stays_within_128_characters_and_apart(hydra_job, tmp_path):
    deep = tmp_path / ("d" * 100) / "2026-12-05_10-00-00"
    hydra_job(SEED_SWEEP, ["experiment=demo", "head.input=multiply", "seed=0"], sweep_dir=deep)
    group = job_identity("demo").group
    assert len(group) == MAX_GROUP_CHARS and group.endswith("2026-12-05_10-00-00 head.input=multiply")
    # swept overrides longer than the limit: their start and a digest of them all (two
    # configurations that differ only after the 128th character stay apart)
    root, img_dirs = "a" * 70, ["a" * 60 + "b", "a" * 60 + "c"]
    task = ["experiment=demo", f"data.root={root},x", f"data.val.img_dir={','.join(img_dirs)}", "seed=0,1"]
    seen = set()
    for img_dir in img_dirs:
        hydra_job(task, ["experiment=demo", f"data.root={root}", f"data.val.img_dir={img_dir}", "seed=1"])
        group = job_identity("demo").group
        assert len(group) == MAX_GROUP_CHARS and group.startswith(f"data.root={root} data.val.img_dir=aaa")
        seen.add(group)
    assert len(seen) == 2


def test_the_seed_is_in_the_wandb_runs_config(hydra_job, tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path))  # restored after the test (the logger points them at its run)
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = ["experiment=demo", "head.input=multiply", "seed=2", "logger=wandb"]
    sweep_dir = hydra_job(SEED_SWEEP, overrides, 5)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose("train", overrides=[*overrides, f"paths.output_dir={sweep_dir / '5'}"]))
    logger = build_logger(cfg, sweep_dir / "5", to_plain(cfg))
    init = logger._wandb_init  # what wandb.init receives when the run starts (nothing is started here)
    assert (
        init["group"] == f"{sweep_dir} head.input=multiply" and init["name"] == "head.input=multiply seed=2"
    )
    assert init["config"]["seed"] == 2 and init["config"]["head"]["input"] == "multiply"
