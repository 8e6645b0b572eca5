"""The code's defaults that the report reads, imported from where the code states them (never restated).

The only module of :mod:`msrcnn.report` that imports the model code.
"""

from __future__ import annotations

from dataclasses import fields

from msrcnn.models.roi_heads import MaskIoUConfig

# The head keys that make a run the paper's MS R-CNN when at their defaults (the ablated ones, and samples,
# which is beyond the paper): a run with another value there is no default row of Tables 1, 2, 4-7.
PAPER_HEAD_KEYS = ("input", "target", "samples", "tau")
# Their defaults, config key -> value (a run written before a key existed had its default).
HEAD_DEFAULTS: dict[str, object] = {
    f"head.{f.name}": f.default for f in fields(MaskIoUConfig) if f.name in PAPER_HEAD_KEYS
}
