"""Timing, machine description and target bookkeeping shared by the benchmark sections."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (``time.perf_counter``)."""
    return compare({"fn": fn}, repeats, warmup)["fn"]


def compare(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict[str, Any]]:
    """Times several functions in one run, interleaved (A B C A B C ...) so that drifts in the
    machine's load hit every contender alike. Returns ``{name: {median_s, min_s, times_s}}``."""
    for _ in range(warmup):
        for fn in fns.values():
            _discard(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            _discard(out)
    return {
        name: {"median_s": median(ts), "min_s": min(ts), "times_s": [round(t, 6) for t in ts]}
        for name, ts in times.items()
    }


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median of the per-round ratios ``a / b`` of two interleaved measurements (robust to drift)."""
    return median([x / y for x, y in zip(a["times_s"], b["times_s"]) if y > 0])


def _discard(out: Any) -> None:
    """Drop a result before the next timing (large outputs would otherwise overlap in memory)."""
    del out
    gc.collect(0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, library versions, threads and the allocator settings."""
    import torchvision

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": affinity,
        "load_average_at_start": load,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
    }


@dataclass
class Target:
    """One target of issue #6 and whether the measured value meets it."""

    name: str
    value: float
    limit: float
    op: str  # "<=" or ">="
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Table:
    """Rows printed under a section title: (figure, value, baseline / detail)."""

    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, figure: str, value: str, detail: str = "") -> None:
        self.rows.append((figure, value, detail))

    def render(self) -> str:
        if not self.rows:
            return ""
        w0 = max(len(r[0]) for r in self.rows)
        w1 = max(len(r[1]) for r in self.rows)
        lines = [f"== {self.title} =="]
        lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """What a benchmark section returns: its figures (``results.json``), its printed table and its targets."""

    results: dict[str, Any]
    table: Table
    targets: list[Target] = field(default_factory=list)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def fmt_ratio(x: float) -> str:
    return f"{x:.3f}x"
