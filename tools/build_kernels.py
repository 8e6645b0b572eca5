#!/usr/bin/env python
"""Builds the C kernels (see setup.py) and puts them beside their Python modules in ``src/``.

``make install`` runs it. It compiles into ``build/kernels`` (incremental: unchanged sources are
not recompiled), then replaces a kernel in ``src/msrcnn`` only when it changed, by an atomic
rename: a process that has the old one loaded (a training run in the same checkout) keeps
running on the old file, where an in-place ``build_ext --inplace`` would overwrite the code under
its feet. Then it imports every kernel, so that a broken build fails here, loudly.
"""

from __future__ import annotations

import filecmp
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "kernels"
KERNELS = ("msrcnn.ops._soft_nms_cpu", "msrcnn.evaluation._rle_cpu")


def main() -> int:
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(BUILD)], cwd=ROOT
    )
    if proc.returncode != 0:
        print(
            "msrcnn: the C kernels did not build (a C compiler is needed); see the errors above",
            file=sys.stderr,
        )
        return proc.returncode
    for name in KERNELS:
        relative = Path(*name.split("."))
        built = sorted(BUILD.glob(f"{relative}.*.so")) + sorted(BUILD.glob(f"{relative}.*.pyd"))
        if not built:
            print(f"msrcnn: {name} was not built under {BUILD}", file=sys.stderr)
            return 1
        target = ROOT / "src" / relative.parent / built[-1].name
        if target.exists() and filecmp.cmp(built[-1], target, shallow=False):
            continue
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(built[-1].read_bytes())
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    sys.path.insert(0, str(ROOT / "src"))
    for name in KERNELS:
        importlib.import_module(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
