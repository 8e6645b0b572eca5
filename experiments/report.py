"""The paper's tables from finished (or partial) sweeps, with the published numbers beside ours.

    python experiments/report.py multirun/table4_input/2026-11-24_10-00-00
    python experiments/report.py SWEEP_DIR [SWEEP_DIR ...] [--table N] [--format md|csv|text]

The command of :mod:`msrcnn.report` (which documents what it reads and prints); from Python:
``from msrcnn.report import report; report(["multirun/table4_input/<date>"], fmt="md")``.
"""

import sys

from msrcnn.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
