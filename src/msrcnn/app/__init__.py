"""The applications behind ``src/train.py``, ``src/eval.py`` and ``src/predict.py``: config in, files in
the run directory out.

Importing this package (the scripts do, before torch) bounds libgomp's spin-waiting: its threads
otherwise spin-wait for each other, and on a small CPU shared with another busy process every op then
waits on a descheduled thread (many times slower steps; benchmarks/README.md). A bounded spin keeps the
idle speed and degrades gracefully. Set ``GOMP_SPINCOUNT`` yourself to override.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "200000")
