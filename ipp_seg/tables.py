"""Tables for the command line: rich tables laid out so that no number is broken across lines.

Rendering only; the command line (``ipp_seg.cli``) fills them with the library's results.
"""

from __future__ import annotations

import os
import re
import sys

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from .printable import bytes_read_as_utf8


class GuardedStream:
    """stdout or stderr as the command line writes to it, so that what was computed is never
    lost to the terminal: text the stream's encoding cannot hold (a ° or Δ, a patient folder's
    Chinese name, on a cp1252 or ASCII log) is written with backslash escapes instead of
    raising, and once the reader has gone (``| head``) the rest is dropped, the stream's file
    descriptor pointed at /dev/null, and the command goes on to its files and its exit code.
    A write that fails otherwise (a full disk, ``> /dev/full``, an I/O error) is kept in
    ``write_error`` and the rest dropped the same way, so that the command can say so in a line
    and exit 2 rather than end in a traceback. Everything else is the stream's. ``name`` is
    ``"stdout"`` or ``"stderr"``: the stream is looked up in :mod:`sys` at each use, as rich
    does, so that a redirection made later holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reader_gone = False
        self.write_error: OSError | None = None

    @property
    def _stream(self):
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        if self.reader_gone or self.write_error:
            return len(text)
        text = bytes_read_as_utf8(text)
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:  # the text wrapper encodes before it writes: nothing was written
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        except BrokenPipeError:
            self._reader_went()
        except OSError as exc:
            self.mark_failed(exc)
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` as it is (a CSV's UTF-8 and CR LF), past the text layer's encoding and
        newline translation, guarded as :meth:`write` is; a stream without a byte layer (a
        test's capture) takes it decoded."""
        if self.reader_gone or self.write_error:
            return
        buffer = getattr(self._stream, "buffer", None)
        try:
            if buffer is None:
                self._stream.write(data.decode("utf-8", "backslashreplace"))
                return
            self._stream.flush()  # (what the text layer holds goes first)
            buffer.write(data)
            buffer.flush()
        except BrokenPipeError:
            self._reader_went()
        except OSError as exc:
            self.mark_failed(exc)

    def flush(self) -> None:
        if self.reader_gone or self.write_error:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_went()
        except OSError as exc:
            self.mark_failed(exc)

    def _reader_went(self) -> None:
        self.reader_gone = True
        self._to_devnull()

    def mark_failed(self, exc: OSError) -> None:
        """Record that writing failed with ``exc``, and drop what is written from now on (the
        file descriptor is pointed at /dev/null, so that Python's own flush at exit succeeds)."""
        self.write_error = exc
        self._to_devnull()

    def _to_devnull(self) -> None:
        try:  # what the text wrapper still buffers is flushed at exit, into /dev/null, silently
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture)
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def new_table(title: str, columns, justify: str = "left") -> Table:
    """A table of ``columns`` (names, or (name, justify) pairs) whose cells fold rather than
    truncate; :func:`print_table` keeps its numbers whole."""
    table = Table(title=title)
    for col in columns:
        name, just = col if isinstance(col, tuple) else (col, justify)
        table.add_column(name, justify=just, overflow="fold")
    return table


# A number is never broken across lines (a folded 0.9287 reads as 0.92 and 87). Other words
# (names, codes, paths) are kept whole up to _WHOLE_WORD characters where the width allows it,
# and folded at _FOLDED_WORD only in a table of many rows, which would be too long as records.
_WHOLE_WORD = 24
_FOLDED_WORD = 10
_MANY_ROWS = 10
_NUMBER = re.compile(r"^[(+\-−]?\d[\d.,:]*[%°)]?[,;]?$")


def print_table(table: Table, console: Console, turn: bool = True) -> None:
    """Print ``table`` so that no number is broken across lines, and no name or code where the
    width allows: as it is when its columns fit the console with their words whole (headers
    may wrap), else turned (one column per row: a few blocks of many metrics; not with
    ``turn`` False), else as one small table per row; a table of
    many rows folds long words before it falls back to that. A dumb terminal (TERM=dumb) gets
    the borders in ASCII. A heading's unit sign that the output cannot encode is spelt out
    (:func:`_spell_for`)."""
    _spell_for(table, console.encoding)
    shapes = [table, _turned(table)] if turn else [table]
    layouts = [(shape, _WHOLE_WORD) for shape in shapes]
    if table.row_count > _MANY_ROWS:
        layouts += [(shape, _FOLDED_WORD) for shape in shapes]
    plain_box = box.ASCII if console.is_dumb_terminal else None
    for layout, longest_whole in layouts:
        widths = _column_widths(layout, console, longest_whole)
        if widths is not None:
            for column, width in zip(layout.columns, widths):
                column.width = width
            layout.box = plain_box or layout.box
            console.print(layout)
            return
    for record in _records(table):
        record.box = plain_box or record.box
        console.print(record)


# How a table's headings spell a unit where the output cannot encode its sign (an ASCII locale, a
# redirected cp1252 stream): "AoP (deg)", not "AoP (\\xb0)", whose escape pushed its column out of line.
_SPELT = {"°": "deg", "Δ": "d", "−": "-", "–": "-", "—": "-", "×": "x", "±": "+/-", "≥": ">=", "≤": "<="}


def _spell_for(table: Table, encoding: str) -> None:
    """Spell ``table``'s title, caption, headings and text cells with :data:`_SPELT` where
    ``encoding`` cannot hold a sign of theirs, and other such characters (a file name's) with
    backslash escapes, as the stream would write them: here, so that the columns are measured
    with them (escaped by the stream, a Chinese name had run past its column's border)."""
    def spelt(text):
        if not isinstance(text, str):
            return text
        try:
            text.encode(encoding)
            return text
        except LookupError:  # (an encoding Python does not know: left to the stream)
            return text
        except UnicodeEncodeError:
            return "".join(c if _encodes(c, encoding) else _SPELT.get(c) or c.encode("ascii", "backslashreplace")
                           .decode("ascii") for c in text)

    table.title, table.caption = spelt(table.title), spelt(table.caption)
    for column in table.columns:
        column.header = spelt(column.header)
        column._cells[:] = [spelt(cell) for cell in column._cells]  # (rich keeps a column's cells there)


def _encodes(character: str, encoding: str) -> bool:
    try:
        character.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _is_number(text: str) -> bool:
    return all(_NUMBER.match(word) for word in text.split()) if text.split() else False


def _column_widths(table: Table, console: Console, longest_whole: int) -> list[int] | None:
    """Widths for ``table``'s columns within the console that keep every number whole, and other
    words up to ``longest_whole`` characters (the first column's lines whole where the console is
    no terminal), the rest of the width shared out towards each column's widest line; None when
    that does not fit."""
    least, most = [], []
    for index, column in enumerate(table.columns):
        words, lines = [1], [1]
        # The first column names the row (a code, a file, a block): its words stay whole up to
        # _WHOLE_WORD even in a folded layout ("ps_too_sma" over "ll" could not be found or grepped).
        whole = max(longest_whole, _WHOLE_WORD) if index == 0 else longest_whole
        for cell in (column.header, *column.cells):
            plain = _plain(cell, console)
            # In terminal cells, not characters: a CJK character takes two (a patient folder's name).
            words += [cell_len(word) if _NUMBER.match(word) else min(cell_len(word), whole)
                      for word in plain.split()]
            lines += [cell_len(line) for line in plain.splitlines()]
        if index == 0 and not console.is_terminal:
            # In a file or a log the row's name stays on one line (a path folded in two is found by no grep).
            words.append(max(lines))
        least.append(max(words))
        most.append(max(max(lines), max(words)))
    room = console.width - (3 * len(least) + 1)  # a border and two spaces of padding per column
    if sum(least) > room:
        return None
    widths = list(least)
    # The narrowest columns (numbers and their headers) first get all they want, on one line;
    # what is left is shared among the wide ones (paths, reasons, meanings), none taking more than
    # an equal part of what the others leave: the first wide column had taken all it wanted and
    # left the last 18 characters on a 200-column terminal.
    order = sorted(range(len(most)), key=lambda k: most[k])
    given = 0
    for position, i in enumerate(order):
        fair = (room - given) // (len(order) - position)
        budget = room - given - sum(least[j] for j in order[position + 1:])  # the later ones' least kept
        widths[i] = max(least[i], min(most[i], fair, budget))
        given += widths[i]
    return widths


def _plain(cell, console: Console) -> str:
    return (console.render_str(cell) if isinstance(cell, str) else cell).plain


def _turned(table: Table) -> Table:
    """``table`` with rows and columns swapped: the first column's cells become the headers.
    A column of numbers only is right-aligned, others left-aligned."""
    first, *rest = table.columns
    turned = Table(title=table.title, caption=table.caption)
    turned.add_column(first.header, overflow="fold")
    rows = [[column.header, *column.cells] for column in rest]
    for i, cell in enumerate(first.cells, start=1):
        numeric = all(_is_number(str(row[i])) or str(row[i]) in ("", "-") for row in rows)
        turned.add_column(cell, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        turned.add_row(*row)
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
