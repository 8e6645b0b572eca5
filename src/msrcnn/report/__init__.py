"""The paper's tables from finished (or partial) sweeps, with the published numbers beside ours.

    python experiments/report.py multirun/table4_input/2026-11-24_10-00-00
    python experiments/report.py SWEEP_DIR [SWEEP_DIR ...] [--table N] [--format md|csv|text]

(``python -m msrcnn.report`` is the same command.) Every run directory (one holding
``.hydra/config.yaml``, e.g. ``SWEEP_DIR/0``, ``SWEEP_DIR/1`` or a single run directory) is read: its
``results.json`` (written by ``src/train.py`` after the final evaluation), ``.hydra/config.yaml`` and
``.hydra/overrides.yaml`` (:mod:`~msrcnn.report.runs`). The table comes from the experiment name
(``experiment=table4_input`` -> Table 4) or, for other sweeps such as
``-m experiment=demo head.input=concat,multiply``, from the swept keys (``head.input`` -> Table 4,
``head.target`` -> 5, ``head.tau`` -> 6, backbones -> 1 or 2; :mod:`~msrcnn.report.detect`);
``--table N`` chooses it. Table 7 (the GT-MaskIoU upper bound) can be drawn from any sweep: every
evaluation computes it.

Rows follow the paper's layout (:mod:`~msrcnn.report.tables`); a row without a run, or whose run has no
``results.json`` (failed or still running), reads ``missing``. The paper's numbers come from
``experiments/paper_numbers.yaml`` (:mod:`~msrcnn.report.paper`); the head's defaults from the code
(:mod:`~msrcnn.report.defaults`).

Seeds: runs whose ``.hydra/config.yaml`` agree on everything but ``seed`` (and where the run was
written and logged: :data:`~msrcnn.report.runs.NOT_THE_CONFIGURATION`) are one configuration, e.g. the
jobs of ``python src/train.py -m experiment=table4_input seed=0,1,2`` that share a ``head.input``
(:mod:`~msrcnn.report.configurations`). Each of our cells is the mean ± sample standard deviation over
the finished seeds, with their number ``(n)``; a seed without ``results.json`` is named in the notes and
not counted. One column gives each row's difference to the table's baseline (Tables 4-6: the default
row; Tables 1 and 2: the backbone's Mask R-CNN; Table 7: MS R-CNN minus the Mask R-CNN column) with its
standard error (Welch: sqrt(sd_a^2/n_a + sd_b^2/n_b); ``n/a`` with one run on either side), marked
``*`` beyond two standard errors (:mod:`~msrcnn.report.stats`). ``--format csv`` gives mean, sd and n,
and diff, SE and the mark, as columns of their own (:mod:`~msrcnn.report.render`).

The mask scoring gain's 95% paired bootstrap interval (``results.json``'s ``mask_scoring_gain``) is a
column of Tables 4-7: one interval per seed (a mean of the seeds' bounds would be no interval), and
how many seeds' intervals lie wholly above 0; in csv, the intervals, that count, the count below 0 and n.
``--table scoring`` (not a paper table): per configuration of MS R-CNN runs, does mask scoring help.
"""

from msrcnn.report.cli import main, report
from msrcnn.report.configurations import Group, at_defaults
from msrcnn.report.defaults import HEAD_DEFAULTS
from msrcnn.report.detect import detect_tables
from msrcnn.report.paper import PAPER_FILE, SCORING, TABLES, load_paper
from msrcnn.report.render import FORMATS, render
from msrcnn.report.runs import ReportError, Run, find_runs, load_run
from msrcnn.report.stats import Diff, Intervals, Stat
from msrcnn.report.tables import MISSING, Table, build_table

__all__ = [
    "FORMATS",
    "HEAD_DEFAULTS",
    "MISSING",
    "PAPER_FILE",
    "SCORING",
    "TABLES",
    "Diff",
    "Group",
    "Intervals",
    "ReportError",
    "Run",
    "Stat",
    "Table",
    "at_defaults",
    "build_table",
    "detect_tables",
    "find_runs",
    "load_paper",
    "load_run",
    "main",
    "render",
    "report",
]
