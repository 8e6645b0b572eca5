"""The command: ``python experiments/report.py SWEEP_DIR [SWEEP_DIR ...] [--table N] [--format md|csv|text]``
(or ``python -m msrcnn.report``), and :func:`report`, the same from Python."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from msrcnn.report.detect import detect_tables
from msrcnn.report.paper import PAPER_FILE, SCORING, TABLES, load_paper
from msrcnn.report.render import FORMATS, render
from msrcnn.report.runs import ReportError, find_runs
from msrcnn.report.tables import build_table


def report(
    dirs: Sequence[str | Path],
    table: int | str | None = None,
    fmt: str = "md",
    paper_file: str | Path = PAPER_FILE,
) -> str:
    """The rendered table(s) of the runs under ``dirs``."""
    runs = find_runs(dirs)
    paper = load_paper(paper_file)
    numbers = [table] if table is not None else detect_tables(runs)
    return "\n".join(render(build_table(n, runs, paper), fmt) for n in numbers)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Prints the table(s) of the sweeps named in ``argv``; 0, or 2 with a one-line error on stderr."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Print the paper's tables from sweep directories, with the published numbers beside ours.",
        epilog="example: python experiments/report.py multirun/table4_input/2026-11-24_10-00-00 --format md",
    )
    parser.add_argument("dirs", nargs="+", metavar="SWEEP_DIR", help="sweep or run directories")
    parser.add_argument(
        "--table",
        type=lambda v: v if v == SCORING else int(v),
        choices=[*TABLES, SCORING],
        help=f"the paper's table, or {SCORING} (per configuration: does mask scoring help; default: detected)",
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument("--paper", default=str(PAPER_FILE), help="the published numbers (YAML)")
    args = parser.parse_args(argv)
    try:
        print(report(args.dirs, args.table, args.format, args.paper), end="")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
