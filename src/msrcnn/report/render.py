"""A table as Markdown, csv (mean, sd and n as columns of their own) or aligned plain text."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from msrcnn.report.runs import ReportError
from msrcnn.report.stats import MARK, SIGNIFICANT_SE, Diff, Intervals, Ratio, Stat
from msrcnn.report.tables import GAIN_INTERVAL, Cell, Table

FORMATS = ("md", "csv", "text")


def _interval_text(ap: float, low: float, high: float) -> str:
    return f"{ap:+.2f} [{low:+.2f}, {high:+.2f}]"


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Intervals):
        runs = "; ".join(_interval_text(*v) for v in cell.values)
        if cell.n == 1:
            return runs
        below = f", {cell.below}/{cell.n} below 0" if cell.below else ""
        return f"{cell.above}/{cell.n} above 0{below}: {runs}"
    if isinstance(cell, Stat):
        digits = 3 if cell.ratio else 1
        spread = f" \u00b1 {cell.sd:.{digits}f}" if cell.sd is not None else ""
        return f"{cell:.{digits}f}{cell.mark}{spread} ({cell.n})"
    if isinstance(cell, Diff):
        se = f"{cell.se:.2f}" if cell.se is not None else "n/a"
        return f"{cell.diff:+.2f} ({se})" + (f" {MARK}" if cell.marked else "")
    if isinstance(cell, Ratio):
        return f"{cell:.3f}"
    if isinstance(cell, float):
        return f"{cell:.1f}"
    return str(cell)


def _csv_columns(table: Table) -> list[tuple[str, str]]:
    """Per column of ``table``: its header and kind (``stat``: mean, sd, n; ``diff``: diff, SE, mark)."""
    kinds = []
    for i, name in enumerate(table.header):
        if i < table.label_columns or name.endswith("(paper)"):
            kinds.append((name, "plain"))
        elif name == GAIN_INTERVAL:
            kinds.append((name, "interval"))
        elif name.endswith(" diff (SE)"):
            kinds.append((name[: -len(" (SE)")], "diff"))
        else:
            kinds.append((name, "stat"))
    return kinds


def _csv_cells(cell: Cell, kind: str) -> list[Any]:
    if kind == "interval":
        if isinstance(cell, Intervals):
            runs = ";".join(f"{ap:g} [{low:g}, {high:g}]" for ap, low, high in cell.values)
            return [runs, cell.above, cell.below, cell.n]
        return [cell if cell is not None else "", "", "", 0]
    if kind == "stat":
        if isinstance(cell, Stat):
            return [float(cell), "" if cell.sd is None else cell.sd, cell.n]
        return [cell if cell is not None else "", "", 0]
    if kind == "diff":
        if isinstance(cell, Diff):
            return [cell.diff, "" if cell.se is None else cell.se, cell.marked]
        return [cell if cell is not None else "", "", ""]
    return ["" if cell is None else cell]


def render(table: Table, fmt: str = "md") -> str:
    """The table as Markdown (``md``), ``csv`` (one header row, full precision, a ``table`` column;
    our numbers as mean, ``sd`` and ``n`` columns, the difference as diff, ``SE`` and ``> 2 SE``)
    or aligned plain ``text``."""
    if fmt == "csv":
        kinds = _csv_columns(table)
        header = ["table"]
        for name, kind in kinds:
            if kind == "stat":
                header += [name, f"{name} sd", f"{name} n"]
            elif kind == "diff":
                header += [name, f"{name} SE", f"{name} > {SIGNIFICANT_SE:g} SE"]
            elif kind == "interval":
                header += [f"{name} per seed", f"{name} above 0", f"{name} below 0", f"{name} n"]
            else:
                header.append(name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for row in table.rows:
            writer.writerow([table.number, *[v for c, (_, k) in zip(row, kinds) for v in _csv_cells(c, k)]])
        return buffer.getvalue()
    cells = [[_text(c) for c in row] for row in table.rows]
    if fmt == "md":
        lines = [
            f"### {table.title}",
            "",
            "| " + " | ".join(table.header) + " |",
            "|"
            + "|".join(
                "---" if i == 0 or not _numeric_column(cells, i) else "---:" for i in range(len(table.header))
            )
            + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        if table.notes:
            lines += [""] + [f"- {note}" for note in table.notes]
        return "\n".join(lines) + "\n"
    if fmt == "text":
        widths = [
            max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(table.header)
        ]
        line = lambda values: "  ".join(  # noqa: E731
            v.ljust(w) if i == 0 or not _numeric_column(cells, i) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()
        lines = [table.title, line(table.header), line(["-" * w for w in widths])] + [line(r) for r in cells]
        lines += [f"note: {note}" for note in table.notes]
        return "\n".join(lines) + "\n"
    raise ReportError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


def _numeric_column(cells: list[list[str]], i: int) -> bool:
    return any(re.match(r"[+-]?\d", row[i]) for row in cells)
