"""The experiment=tableN_* sweeps: every job of every sweep composes and validates, with the paper's recipe."""

import itertools
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from exp_helpers import CONF, ROOT
from msrcnn.app.schemas import validate

TABLES = {  # experiment -> expected jobs: (backbone, head, the swept head value) ...
    "table1_backbones": 6,
    "table2_frameworks": 6,
    "table4_input": 4,
    "table5_target": 3,
    "table6_threshold": 4,
    "table7_upper_bound": 2,
}
SIZES = {"r18_fpn": ([600], 1000)}  # every other backbone: 800 / 1333


def sweep_jobs(experiment):
    """The override lists Hydra's basic sweeper makes from the experiment's hydra.sweeper.params."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


def compose_job(experiment, job):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", *job, "data.root=/data/coco", "paths.output_dir=/tmp/x"],
        )
    return validate(cfg)


@pytest.mark.parametrize("experiment", sorted(TABLES))
def test_every_job_of_the_sweep_validates_with_the_papers_recipe(experiment):
    jobs = sweep_jobs(experiment)
    assert len(jobs) == TABLES[experiment]
    seen = set()
    for job in jobs:
        cfg = compose_job(experiment, job)
        backbone = cfg.backbone.name.value
        min_size, max_size = SIZES.get(backbone, ([800], 1333))
        assert list(cfg.model.min_size) == min_size and cfg.model.max_size == max_size, (job, backbone)
        assert cfg.data.name.value == "coco" and cfg.backbone.pretrained == "imagenet"
        assert cfg.optim.name.value == "sgd" and cfg.optim.lr == 0.02 and cfg.optim.base_batch_size == 16
        assert list(cfg.optim.lr_step_epochs) == [14, 17] and cfg.optim.schedule_epochs == 18
        assert cfg.trainer.max_epochs == 18 and cfg.trainer.max_steps == -1
        assert (
            cfg.model.soft_nms.enabled
            and cfg.model.box_detections_per_img == 100
            and cfg.eval.max_dets == 100
        )
        assert cfg.experiment_name == experiment and cfg.logger.group is None  # W&B: grouped by sweep
        assert list(cfg.logger.tags) == [experiment.split("_")[0]]  # the paper table, e.g. table4
        assert cfg.logger.name.value == "wandb"
        assert cfg.head.samples.value == "positives"  # the paper's tables keep the paper's samples
        seen.add((backbone, cfg.head.name.value, cfg.head.input.value, cfg.head.target.value, cfg.head.tau))
    assert len(seen) == len(jobs)  # every job is a different configuration


def test_the_sweeps_cover_the_papers_rows():
    def values(experiment, attr):
        return sorted({attr(compose_job(experiment, job)) for job in sweep_jobs(experiment)})

    assert values("table1_backbones", lambda c: (c.backbone.name.value, c.head.name.value)) == sorted(
        (b, h) for b in ("r18_fpn", "r50_fpn", "r101_fpn") for h in ("maskiou", "none")
    )
    assert values("table2_frameworks", lambda c: (c.backbone.name.value, c.head.name.value)) == sorted(
        (b, h) for b in ("r101_c4", "r101_fpn", "r101_dcn_fpn") for h in ("maskiou", "none")
    )
    assert values("table4_input", lambda c: c.head.input.value) == sorted(
        ["concat", "multiply", "concat_all", "concat_highres"]
    )
    assert values("table5_target", lambda c: c.head.target.value) == sorted(
        ["target_class", "all_classes", "positive_classes"]
    )
    assert values("table6_threshold", lambda c: c.head.tau) == [0.0, 0.3, 0.5, 0.7]
    assert values("table7_upper_bound", lambda c: c.backbone.name.value) == ["r101_dcn_fpn", "r18_fpn"]


def test_a_single_run_of_a_table_is_its_default_row():
    cfg = compose_job("table4_input", [])
    assert cfg.head.input.value == "concat" and cfg.backbone.name.value == "r18_fpn"
    assert list(cfg.model.min_size) == [600] and cfg.model.max_size == 1000


def test_ddp_command_line_composes():
    cfg = compose_job(
        "table1_backbones", ["+experiment@_global_=table_row_r50_fpn", "trainer=ddp", "trainer.devices=8"]
    )
    assert cfg.trainer.devices == 8 and cfg.trainer.strategy == "ddp" and cfg.backbone.name.value == "r50_fpn"
    assert cfg.optim.lr == 0.02  # scaled by the module with the real total batch (2 x 8 = 16: unchanged)


SPEC = ROOT.parent / "shared" / "SPEC.md"


@pytest.mark.skipif(not SPEC.is_file(), reason="the shared SPEC.md is not beside the repository")
def test_paper_numbers_hold_every_number_of_spec_section_7():
    section = SPEC.read_text().split("## 7.", 1)[1].split("\n## ", 1)[0]
    section = section.replace("Section 4.4", "Section")
    spec_numbers = sorted(float(x) for x in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", section))
    paper = yaml.safe_load((ROOT / "experiments" / "paper_numbers.yaml").read_text())

    def numbers(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if re.fullmatch(r"\d+\.\d+", str(key)):  # Table 6 rows are keyed by tau
                    yield float(key)
                if key not in ("title", "split"):
                    yield from numbers(value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            yield float(node)

    ours = list(numbers(paper))
    missing = [x for x in sorted(set(spec_numbers)) if x not in ours]
    assert not missing, f"published numbers of SPEC.md not in paper_numbers.yaml: {missing}"
    # Spot checks of the layout the report reads.
    assert paper["table1"]["rows"]["r101_fpn"]["ms_rcnn"]["bbox"]["AP75"] == 46.3
    assert paper["table5"]["rows"]["all_classes"]["segm"] == {"AP": 24.5, "AP50": 41.6, "AP75": 25.6}
    assert paper["table6"]["rows"]["0.7"]["segm"]["AP50"] == 46.9
    assert paper["table7"]["rows"]["r101_dcn_fpn"] == {"mask_rcnn": 37.7, "ms_rcnn": 39.1, "oracle": 41.7}
    assert paper["table3"]["rows"]["r101_c4"]["ms_rcnn"]["segm"]["APl"] == 53.3
    assert Path(ROOT / "experiments" / "paper_numbers.yaml").is_file()


@pytest.mark.parametrize("experiment", ["custom_cpu", "custom_gpu"])
def test_custom_data_presets_train_the_head_on_every_detection(experiment):
    # experiments/README.md, "Mask scoring on real data": on real cells head.samples=detections lifts the
    # gain and the MaskIoU head's Pearson r over all detections; the paper's demo keeps positives
    overrides = [
        "data.train.ann_file=a.json",
        "data.train.img_dir=i",
        "data.val.ann_file=b.json",
        "data.val.img_dir=i",
        "paths.output_dir=/tmp/x",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose("train", overrides=[f"experiment={experiment}", *overrides]))
        demo = validate(compose("train", overrides=["experiment=demo", "paths.output_dir=/tmp/x"]))
    assert cfg.head.samples.value == "detections"
    assert demo.head.samples.value == "positives"
