"""tests/scale: the suite's shared constants, importable as ``from conftest import ROOT, CONF, TINY``.

Each test folder's ``conftest.py`` is imported under the same module name, and the one collected last
wins; this one re-exports the root ``tests/conftest.py``'s constants so the name resolves for this folder.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_msrcnn_tests_root_conftest", Path(__file__).parents[1] / "conftest.py"
)
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)

ROOT, CONF, TINY = _root.ROOT, _root.CONF, _root.TINY
