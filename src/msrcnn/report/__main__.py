"""``python -m msrcnn.report SWEEP_DIR ...``: the paper's tables from sweep directories."""

import sys

from msrcnn.report.cli import main

sys.exit(main(prog="python -m msrcnn.report"))
