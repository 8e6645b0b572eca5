"""W&B runs (issue 13): one run per sweep job, named by its overrides, grouped by sweep, finished
even when the job fails; the checkpoint as an artifact; src/eval.py results in W&B.

The runs are read back from the offline ``run-<id>.wandb`` files (``msrcnn.app.wandb_runs``).
The two-job sweep (and the evaluations of its checkpoint) take minutes on 2 busy cores: ``slow``;
the default suite runs the per-job run handling in-process (a failing job, then the next one).
"""

import json
import re

import pytest
import torch
import wandb
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from exp_helpers import CONF, QUIET_WANDB, TINY, run_script
from msrcnn.app.evaluate import evaluate
from msrcnn.app.wandb_runs import make_wandb_logger, sweep_keys, wandb_job
from msrcnn.config import ConfigError
from wandb_offline import offline_runs, read_offline_run

WANDB_VARS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shapes_dir):
    """``python src/train.py -m experiment=demo head.input=concat,multiply`` (tiny), default logger."""
    out = tmp_path_factory.mktemp("wandb_sweep") / "sweep"
    overrides = [o for o in TINY if not o.startswith("logger=")]  # the default logger: W&B, offline
    proc = run_script(
        "train.py",
        "-m",
        *overrides,
        "head.input=concat,multiply",
        f"paths.data_dir={shapes_dir}",
        f"hydra.sweep.dir={out}",
        env=QUIET_WANDB,
    )
    return out, proc


@pytest.mark.slow
def test_a_two_job_sweep_with_the_default_logger_makes_one_run_per_job(sweep):
    out, proc = sweep
    assert "wandb run already in progress" not in proc.stdout + proc.stderr
    runs = offline_runs(out)
    assert [r.name for r in runs] == ["head.input=concat", "head.input=multiply"]  # the swept overrides
    assert runs[0].id != runs[1].id
    for num, (run, head_input) in enumerate(zip(runs, ("concat", "multiply"))):
        assert run.path.parent == out / str(num) / "wandb"  # in the job's own directory
        assert run.group == str(out)  # the sweep
        assert run.exit_code == 0 and run.job_type == "train"
        config = run.config
        assert config["head"]["input"] == head_input and config["experiment_name"] == "demo"
        assert config["trainer"]["max_steps"] == 2 and config["model"]["min_size"] == [64]
        assert (
            config["num_classes"] == 7 and "config" not in config
        )  # the module's hparams merged, not nested
        assert config["job"]["num"] == num and config["job"]["sweep_dir"] == str(out)
        assert f"head.input={head_input}" in config["job"]["overrides"]

        results = json.loads((out / str(num) / "results.json").read_text())
        summary = run.summary
        for ranking in ("bbox", "segm", "segm_cls", "segm_oracle"):
            assert summary[f"val/{ranking}_AP"] == pytest.approx(results[ranking]["AP"]), ranking
        gain = results["segm"]["AP"] - results["segm_cls"]["AP"]
        assert summary["val/mask_scoring_gain"] == pytest.approx(gain)
        assert summary["val/maskiou_pearson"] == pytest.approx(results["maskiou_pearson"])
        for key in ("val/detections", "val/ap_table", "val/per_class_AP", "val/fig5_maskiou_table"):
            assert summary[key]["_type"] in ("table-file", "partitioned-table", "joined-table"), key
        assert summary["val/predictions"]["_type"] == "images/separated"
        assert summary["val/predictions"]["count"] == 4  # logger.log_images
        assert not [a for a in run.artifacts if a["type"] == "model"]  # logger.log_model is off by default


def test_sweep_keys_come_from_the_sweeper_params_and_the_command_line(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=table1_backbones, 'head=maskiou,none', seed=1]\n"
    )
    hc = OmegaConf.create(
        {"sweeper": {"params": {"+experiment@_global_": "a,b"}}, "sweep": {"dir": str(tmp_path)}}
    )
    assert sweep_keys(hc) == {"experiment@_global_", "head"}  # not the table's own experiment=...


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    for var in WANDB_VARS:  # restored after the test (make_wandb_logger points them at its run dir)
        monkeypatch.setenv(var, str(tmp_path))
    for var, value in QUIET_WANDB.items():
        monkeypatch.setenv(var, value)
    yield
    assert wandb.run is None


def test_a_failing_job_finishes_its_run_and_the_next_job_gets_its_own(tmp_path, wandb_env):
    @wandb_job
    def job(cfg, num, fail):
        logger = make_wandb_logger(
            tmp_path / f"job{num}",
            project="t",
            name=f"job {num}",
            group="sweep",
            tags=["table4"],
            mode="offline",
            config={"num": num},
        )
        logger.experiment.summary["val/segm_AP"] = 10.0 + num
        if fail:
            raise RuntimeError("boom")
        return num

    cfg = OmegaConf.create({"logger": {"log_model": False}, "paths": {"output_dir": str(tmp_path)}})
    with pytest.raises(RuntimeError, match="boom"):
        job(cfg, 0, True)
    assert wandb.run is None
    assert job(cfg, 1, False) == 1
    assert wandb.run is None
    failed, ok = (
        read_offline_run(next((tmp_path / f"job{n}" / "wandb").glob("offline-run-*"))) for n in (0, 1)
    )
    assert (failed.exit_code, ok.exit_code) == (1, 0)
    assert failed.id != ok.id and (failed.config["num"], ok.config["num"]) == (0, 1)
    assert (failed.summary["val/segm_AP"], ok.summary["val/segm_AP"]) == (10.0, 11.0)
    assert ok.tags == ["table4"] and ok.group == "sweep" and ok.name == "job 1"


def test_log_model_logs_the_checkpoints_as_an_artifact(tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, run_dir / "checkpoints" / "last.ckpt")
    (run_dir / "results.json").write_text(json.dumps({"segm": {"AP": 12.5}, "maskiou_pearson": 0.5}))

    @wandb_job
    def job(cfg):
        logger = make_wandb_logger(
            run_dir, project="t", name="r", group=None, tags=[], mode="offline", config={}
        )
        assert logger.experiment is not None  # starts the run that log_model adds to

    job(OmegaConf.create({"logger": {"log_model": True}, "paths": {"output_dir": str(run_dir)}}))
    (run,) = offline_runs(run_dir)
    (model,) = [a for a in run.artifacts if a["type"] == "model"]
    assert model["name"] == f"model-{run.id}" and model["files"] == ["last.ckpt"]
    assert model["metadata"]["val/segm_AP"] == 12.5 and model["metadata"]["run_dir"] == str(run_dir)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["logger.id=abc123"], "logger.id=abc123 needs logger=wandb (the logger is none)"),
        (["logger=csv", "logger.log_model=true"], "logger.log_model=True needs logger=wandb"),
        (["logger=wandb", "logger.log_model=true"], "logger.log_model=true is for training"),
    ],
)
def test_eval_refuses_wandb_keys_it_cannot_use(overrides, message, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate", overrides=["ckpt_path=/no/such.ckpt", f"paths.output_dir={tmp_path}", *overrides]
        )
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate(cfg)  # before the checkpoint is read


@pytest.mark.slow
def test_eval_logs_to_a_run_of_its_own_or_into_the_training_run(sweep, shapes_dir, tmp_path):
    out, _ = sweep
    trained = offline_runs(out / "0")[0]
    ckpt = out / "0" / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", f"paths.data_dir={shapes_dir}", "logger=wandb"]

    own_dir = tmp_path / "own"
    run_script("eval.py", *common, f"hydra.run.dir={own_dir}", env=QUIET_WANDB)
    (own,) = offline_runs(own_dir)
    results = json.loads((own_dir / "results.json").read_text())
    assert own.id != trained.id and own.job_type == "eval" and own.name == "eval demo"
    assert own.config["head"]["input"] == "concat" and own.config["backbone"]["fpn_channels"] == 32
    assert own.config["evaluation"] == {
        "ckpt_path": str(ckpt),
        "split": "val",
        "max_dets": 100,
        "soft_nms": None,
    }
    assert own.summary["val/segm_AP"] == pytest.approx(results["segm"]["AP"])
    assert own.summary["val/segm_AP"] == pytest.approx(trained.summary["val/segm_AP"])  # the same model
    assert own.summary["val/detections"]["_type"] == "table-file"

    into_dir = tmp_path / "into"
    run_script("eval.py", *common, f"logger.id={trained.id}", f"hydra.run.dir={into_dir}", env=QUIET_WANDB)
    (into,) = offline_runs(into_dir)
    assert into.id == trained.id  # `wandb sync` adds it to the training run
    assert into.summary["val/segm_AP"] == pytest.approx(results["segm"]["AP"])


def _hydra(mode, overrides, num=0, sweep_dir="/sweeps/table4/2025-06-01", params=None):
    from hydra.types import RunMode

    return OmegaConf.create(
        {
            "mode": RunMode[mode],
            "overrides": {"task": overrides},
            "runtime": {"output_dir": f"{sweep_dir}/{num}"},
            "sweep": {"dir": sweep_dir},
            "job": {"num": num},
            "sweeper": {"params": params or {}},
        }
    )


def test_job_identity_names_a_sweep_job_by_its_swept_overrides(monkeypatch, tmp_path):
    """A single run is named and grouped by its experiment; a sweep job by its swept overrides (the
    sweep's multirun.yaml) and grouped by its sweep dir; a job with nothing swept by its number."""
    from msrcnn.app import wandb_runs

    sweep_dir = str(tmp_path)
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=demo, 'head.input=concat,multiply']\n"
    )
    overrides = ["experiment=demo", "head.input=multiply"]
    monkeypatch.setattr(wandb_runs, "_hydra_config", lambda: None)
    assert wandb_runs.job_identity("demo") == wandb_runs.JobIdentity(name="demo", group="demo")
    monkeypatch.setattr(wandb_runs, "_hydra_config", lambda: _hydra("RUN", overrides, sweep_dir=sweep_dir))
    single = wandb_runs.job_identity("demo", group="mine")
    assert (single.name, single.group, single.job["overrides"]) == ("demo", "mine", overrides)
    monkeypatch.setattr(
        wandb_runs, "_hydra_config", lambda: _hydra("MULTIRUN", overrides, num=1, sweep_dir=sweep_dir)
    )
    job = wandb_runs.job_identity("demo")
    assert (job.name, job.group) == ("head.input=multiply", sweep_dir)
    assert job.job == {"overrides": overrides, "run_dir": f"{sweep_dir}/1", "num": 1, "sweep_dir": sweep_dir}
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [experiment=demo]\n")
    assert wandb_runs.job_identity("demo").name == "demo #1"  # nothing swept: the job's number


def test_an_in_process_run_with_the_default_logger_writes_its_wandb_run_inside_the_run_dir(
    tmp_path, shapes_dir, monkeypatch, capfd
):
    """The default logger (W&B, offline): one run, named and grouped by the experiment, its files in
    <run dir>/wandb and nowhere else, finished with exit code 0, its summary the final APs."""
    from msrcnn.app.train import train

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for var in WANDB_VARS:  # the run must point W&B into its run directory (restored after the test)
        monkeypatch.setenv(var, str(elsewhere))
    for var, value in QUIET_WANDB.items():
        monkeypatch.setenv(var, value)
    cwd_wandb = (CONF.parent / "wandb").exists()
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *(o for o in TINY if not o.startswith("logger=")),
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={run_dir}",
            ],
        )
    assert cfg.logger.name == "wandb"  # the default
    results = train(cfg)
    assert wandb.run is None  # finished with the job
    assert "anonymous" not in capfd.readouterr().err  # wandb's deprecation line, not the project's
    (run,) = offline_runs(run_dir)
    assert run.path.parent == run_dir / "wandb"
    assert (run.name, run.group, run.job_type, run.exit_code) == ("demo", "demo", "train", 0)
    assert run.config["head"]["input"] == "concat" and run.config["trainer"]["max_steps"] == 2
    assert run.summary["val/segm_AP"] == pytest.approx(results["segm"]["AP"])
    assert not any(elsewhere.iterdir())
    assert (CONF.parent / "wandb").exists() == cwd_wandb
