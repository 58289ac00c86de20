"""Tables for the command line: rich tables laid out so that no number is broken across lines.

Rendering only; the command line (``ipp_seg.cli``) fills them with the library's results.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table


def new_table(title: str, columns, justify: str = "left") -> Table:
    """A table of ``columns`` (names, or (name, justify) pairs) whose cells fold rather than
    truncate; :func:`print_table` keeps its numbers whole."""
    table = Table(title=title)
    for col in columns:
        name, just = col if isinstance(col, tuple) else (col, justify)
        table.add_column(name, justify=just, overflow="fold")
    return table


# A number is never broken across lines (a folded 0.9287 reads as 0.92 and 87); other words
# (paths, codes, headers) may be, where they are longer than this.
_FOLDED_WORD = 10
_NUMBER = re.compile(r"^[(+\-−]?\d[\d.,:]*[%°)]?[,;]?$")


def print_table(table: Table, console: Console) -> None:
    """Print ``table`` so that no number or code is broken across lines: as it is when its
    columns fit the console's width with every word whole (headers may wrap), else turned (one
    column per row: a few blocks of many metrics), else as one small table per row."""
    for layout in (table, _turned(table)):
        widths = _column_widths(layout, console)
        if widths is not None:
            for column, width in zip(layout.columns, widths):
                column.width = width
            console.print(layout)
            return
    for record in _records(table):
        console.print(record)


def _column_widths(table: Table, console: Console) -> list[int] | None:
    """Widths for ``table``'s columns within the console that keep every number whole, and other
    words up to :data:`_FOLDED_WORD` characters, the rest of the width shared out towards each
    column's widest line; None when that does not fit."""
    least, most = [], []
    for column in table.columns:
        words, lines = [1], [1]
        for cell in (column.header, *column.cells):
            plain = (console.render_str(cell) if isinstance(cell, str) else cell).plain
            words += [len(word) if _NUMBER.match(word) else min(len(word), _FOLDED_WORD) for word in plain.split()]
            lines += [len(line) for line in plain.splitlines()]
        least.append(max(words))
        most.append(max(max(lines), max(words)))
    room = console.width - (3 * len(least) + 1)  # a border and two spaces of padding per column
    if sum(least) > room:
        return None
    widths = list(least)
    # The narrowest columns (numbers and their headers) first get all they want, on one line;
    # what is left goes to the wide ones (paths, reasons) in turn.
    for i in sorted(range(len(most)), key=lambda k: most[k]):
        widths[i] += max(0, min(most[i] - widths[i], room - sum(widths)))
    return widths


def _turned(table: Table) -> Table:
    """``table`` with rows and columns swapped: the first column's cells become the headers."""
    first, *rest = table.columns
    turned = Table(title=table.title, caption=table.caption)
    turned.add_column(first.header, overflow="fold")
    for cell in first.cells:
        turned.add_column(cell, justify="right", overflow="fold")
    for column in rest:
        turned.add_row(column.header, *column.cells)
    return turned


def _records(table: Table) -> list[Table]:
    """One two-column table (field, value) per row of ``table``."""
    columns = table.columns
    records = []
    for i in range(table.row_count):
        record = Table(title=f"{table.title} ({i + 1} of {table.row_count})" if table.title else None,
                       show_header=False)
        record.add_column(overflow="fold")
        record.add_column(overflow="fold")
        for column in columns:
            record.add_row(column.header, list(column.cells)[i])
        records.append(record)
    if records and table.caption:
        records[-1].caption = table.caption
    return records
