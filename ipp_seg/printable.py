"""Text as a terminal, a log or a line-based reader shows it without acting on it: control
characters written out. Light on purpose: the command line's messages use it before numpy loads."""

from __future__ import annotations

import re
import shlex

#: C0 and C1 controls, DEL, the line and paragraph separators, and Unicode's bidirectional
#: formatting characters: raw, each would split a line-based reader's row or a table's, make a
#: terminal act (ESC, CR), or show the text around it in another order (a right-to-left override
#: shows a DICOM file ``04700_<U+202E>gnp.dcm`` as ``04700_mcd.png``, a case ID reversed).
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped_character(match: re.Match) -> str:
    """A :data:`CONTROL_CHARACTER` match written out: ``\\x0a`` for a C0 control or DEL,
    ``\\u0085`` for a C1 control, a separator or a bidirectional formatting character."""
    code = ord(match.group())
    # A C0 control is one byte, written as such; a C1 control or a line separator is a character
    # of two or three UTF-8 bytes, written by its code point.
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """``text`` (a message that may quote file names, case IDs, readers' reasons) as a terminal or
    a log shows it without acting on it: each control character written out (an ANSI sequence's
    ESC as ``\\x1b``, a carriage return as ``\\x0d``, a newline as ``\\x0a``), and a name's bytes
    that are not UTF-8 as ``\\xfc``; all else, backslashes included, as it is. A crafted file
    name had cleared the screen, hidden a warning behind a carriage return, or added lines of its
    own to a log."""
    text = _LONE_SURROGATE.sub(_escaped_surrogate, bytes_read_as_utf8(text))
    return CONTROL_CHARACTER.sub(_escaped_character, text)


def bytes_read_as_utf8(text: str) -> str:
    """``text`` with a name's bytes that Python held as lone surrogates (an ASCII locale holds
    every byte past ASCII so) read as UTF-8 where they are, and those that are not UTF-8 written
    ``\xfc``, as the CSV and JSON write them: ``nöpe.dcm`` in tables and messages alike (a message
    line had said ``n\xc3\xb6pe.dcm``). A surrogate of another origin stays as it is."""
    if not _LONE_SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # (a surrogate of another origin)
        return text


#: A lone surrogate: a name's byte that is not UTF-8, as ``surrogateescape`` holds it (U+DC80 to
#: U+DCFF), or any other (a JSON ``"\ud800"``, a Windows name of invalid UTF-16), which no UTF-8
#: text can hold.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped_surrogate(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def shell_command(words: list[str]) -> str:
    """``words`` (a command's ``sys.argv``) as one line of text that a POSIX shell (bash, zsh,
    ksh) runs again: each word quoted as :func:`shlex.quote` quotes it, but a word holding a
    name's bytes that are not UTF-8 (lone surrogates, as Python holds them) in ANSI-C quoting,
    ``$'n\\xfcpe.dcm'``, so that the line is text (a run record's ``command``, which JSON readers
    refuse with lone surrogates in it) and still names the same file."""
    return " ".join(_ansi_c_quoted(word) if _LONE_SURROGATE.search(word) else shlex.quote(word) for word in words)


def _ansi_c_quoted(word: str) -> str:
    try:
        data = word.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # (a surrogate of another origin, no byte of a name: written by its code point)
        return shlex.quote(_LONE_SURROGATE.sub(_escaped_surrogate, word))
    return "$'" + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"\\'" else f"\\x{b:02x}" for b in data) + "'"
