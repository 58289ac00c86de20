"""Walking a folder tree the way ipp-seg's folder commands do (``batch``, ``evaluate``), and
keeping a folder to one writer at a time (``batch``'s output folder, ``train``'s run folder)."""

from __future__ import annotations

import codecs
import errno
import json
import logging
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import IppSegError
from ..printable import CONTROL_CHARACTER, terminal_text

log = logging.getLogger(__name__)


class FolderInUseError(IppSegError, ValueError):
    """Another ipp-seg process holds the folder's lock (see :func:`folder_lock`)."""


#: What a lock another process holds fails with (flock, and Windows' locking); any other error
#: is a file system that keeps no locks (some network shares), not a folder in use.
_HELD_ERRNOS = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK})


@contextmanager
def folder_lock(folder: Path, lock_name: str, in_use: FolderInUseError):
    """Hold the lock file ``folder/lock_name`` while the block runs, raising ``in_use`` when
    another process holds it: two runs writing into one folder would mix their files. An
    advisory lock (fcntl; on Windows a lock on the file's first byte, msvcrt), released by the
    system when the process ends however it ends. On a file system that keeps no locks (some
    network shares) the block runs unlocked, with a warning."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None
    if fcntl is None and msvcrt is None:
        yield
        return
    path = folder / lock_name
    # Never through a link: one planted there had made the run create or lock a file outside the folder.
    # (Asked first where there is no O_NOFOLLOW, Windows; O_NOFOLLOW closes the race elsewhere.)
    linked = OSError(errno.ELOOP, "a link lies where ipp-seg keeps its lock file: remove the link", str(path))
    if path.is_symlink():
        raise linked
    mode = "rb+"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | _NOT_WAITING | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():  # (FreeBSD says EMLINK)
            raise linked from None
        # The folder may be writable (a shared study folder, setgid) while the lock file a
        # colleague's run left is theirs alone (umask 022): flock needs only to read it (an
        # admin's pass: a run refused for another reason had left its lock file so, and locked the
        # folder's first user out). msvcrt's lock needs it writable: there, the cause and its remedy.
        descriptor = _lock_file_read_only(path) if isinstance(exc, PermissionError) and fcntl is not None else None
        if descriptor is None:
            owner = _owner_name(path) if isinstance(exc, PermissionError) else None
            if owner is not None:
                raise PermissionError(exc.errno, f"{exc.strerror}: the lock file a run of {owner} left there is "
                                                 f"writable by {owner} alone (ask them to make it group-writable, "
                                                 "chmod g+w, or remove it while no run writes there)",
                                      str(path)) from None
            raise
        mode = "rb"
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # (a pipe planted there: opened without waiting, a review)
        os.close(descriptor)
        raise OSError(errno.EINVAL, "no regular file lies where ipp-seg keeps its lock file (a pipe, a device or a "
                                    "folder): move it away", str(path))
    with os.fdopen(descriptor, mode) as fh:
        fh.seek(0)  # (msvcrt locks from the position: the first byte)
        try:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            unlocked = None
        except OSError as exc:
            if exc.errno in _HELD_ERRNOS:
                raise in_use from None
            unlocked = exc
        if unlocked is not None:  # (outside the except: the block's own errors are not chained to this one)
            log.warning("%s cannot be locked (%s): a second run into this folder at the same time would not be "
                        "stopped", printable_path(str(folder)), unlocked.strerror or unlocked)
            yield
            return
        try:
            yield
        finally:
            try:
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                else:
                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            except OSError:  # (closing the file releases it as well)
                pass


# Opening a pipe waits for its other end (for ever, one planted where a file was expected).
_NOT_WAITING = getattr(os, "O_NONBLOCK", 0)


def _lock_file_read_only(path: Path) -> int | None:
    """A lock file there already opened for reading (never through a link), None where it cannot be."""
    try:
        return os.open(path, os.O_RDONLY | _NOT_WAITING | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None


def walk_folders(root: Path, skip: Callable[[Path, Path], bool] | None = None, warn_links: bool = True,
                 hidden: list[Path] | None = None,
                 unlisted: list[tuple[Path, str]] | None = None) -> Iterator[tuple[Path, Path, list[str]]]:
    """(folder, its real path, the names of its non-hidden entries that are not folders) for
    ``root`` and its non-hidden sub-folders, sub-folders in name order.

    Folder links are followed, each real folder once, so a link loop ends; a link to a folder
    already walked is named in a warning, as its files are listed under the first name only,
    and so is a link to a folder below ``root``, whose files are listed under its own name. A
    folder for which ``skip(folder, real_path)`` is true is left out with everything below it (it
    is asked once per real folder, never for a folder already walked). ``warn_links`` false: those
    links are not named (a second walk of the same tree, which named them already). ``hidden``
    gets the hidden files and folders of the folders walked (:func:`is_hidden_name`,
    :func:`is_hidden_folder`), which are left out. ``unlisted`` gets each folder that could not be
    listed (no permission: its files are left out, with a warning but for ``root`` itself, which
    its caller says) and the system's reason."""
    visited: dict[Path, Path] = {}  # real path -> the name it was walked under
    # Folders reached without a link are walked under their own names, wherever a link to one
    # sorts: "link1" had taken "real"'s files, so that --glob 'real/**' found none. Listed only
    # once a folder reached through a link is met: most trees have none.
    top = Path(os.path.realpath(root))
    own_names: dict[Path, Path] | None = None

    def unlistable(exc: OSError) -> None:  # os.walk would pass over it without a word
        # ``root`` itself unlistable leaves nothing to list: a caller that collects the folders
        # says so as its error (a warning first had said it twice).
        if unlisted is None or exc.filename is None or Path(os.path.realpath(exc.filename)) != top:
            log.warning("cannot list %s (%s): the files in it are left out", exc.filename, exc.strerror or exc)
        if unlisted is not None and exc.filename is not None:
            unlisted.append((Path(exc.filename), str(exc.strerror or exc)))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=unlistable):
        here, real = Path(folder), Path(os.path.realpath(folder))
        if real in visited:
            # A user who linked a folder in twice may expect rows under both names, as each
            # link to a file gets: say where its files are.
            if warn_links:
                log.warning("%s leads to a folder already listed as %s: its files are listed once, under that name",
                            printable_path(str(here)), printable_path(str(visited[real])))
            dirs[:] = []
            continue
        if skip is not None and skip(here, real):
            dirs[:] = []
            continue
        if real != top / here.relative_to(root) and own_names is None:  # reached through a link
            own_names = {Path(os.path.realpath(folder)): Path(folder) for folder in _folders_without_links(root)}
        if own_names is not None and own_names.get(real, here) != here:
            if warn_links:
                log.warning("%s leads to %s, whose files are listed under that name", printable_path(str(here)),
                            printable_path(str(own_names[real])))
            dirs[:] = []
            continue
        visited[real] = here
        if hidden is not None:  # what is left out, for a count (hidden folders not walked)
            hidden += [here / d for d in sorted(dirs) if is_hidden_folder(d)]
            hidden += [here / name for name in sorted(names) if is_hidden_name(name)]
        dirs[:] = sorted(d for d in dirs if not is_hidden_folder(d))
        yield here, real, [name for name in names if not is_hidden_name(name)]


#: Files the desktop writes into folders it shows (Windows' thumbnail caches and folder
#: settings, macOS's custom folder icon): hidden there, and skipped as hidden files are.
_SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})


def is_hidden_name(name: str) -> bool:
    """Whether a file of this name is hidden: a dot file (``.DS_Store``, ``._scan.dcm``), or one
    the desktop writes beside what it shows (``Thumbs.db``, ``desktop.ini``, macOS's ``Icon\\r``)."""
    return name.startswith(".") or name.casefold() in _SYSTEM_FILES


def is_hidden_folder(name: str) -> bool:
    """Whether a folder of this name is skipped as hidden: a dot folder, or ``__MACOSX``, where
    a zip made on macOS keeps the AppleDouble resource forks of its files (no scans: their
    headers read as unreadable files, measured again on every ``--resume``)."""
    return name.startswith(".") or name.casefold() == "__macosx"


def _folders_without_links(root: Path) -> Iterator[str]:
    """``root`` and its non-hidden sub-folders reached without following a link."""
    for folder, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if not is_hidden_folder(d)]
        yield folder


def folders_to_create(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what making it
    will create, and what :func:`remove_made_folders` takes away again after a refusal."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def make_folders(folder: Path, made: list[Path]) -> None:
    """Make ``folder`` and its missing parents, adding each one this call made to the front of
    ``made`` (deepest first, for :func:`remove_made_folders`): not one another process made
    meanwhile (two runs started together into one new folder: the one refused had removed the
    other's folder, with its lock and record). Raises OSError as :func:`os.mkdir` does, with
    ``made`` holding what was made before."""
    for missing in reversed(folders_to_create(folder)):
        try:
            os.mkdir(missing)
        except FileExistsError:
            if not os.path.isdir(missing):
                raise
            continue  # made by another process since it was found missing: its, not this call's
        made.insert(0, missing)


def remove_made_folders(created: list[Path], leftovers: frozenset[str] = frozenset()) -> None:
    """Remove the folders of :func:`folders_to_create` (deepest first) that hold nothing but
    files named in ``leftovers`` (such as a run's own lock file, removed with them), so that a
    command refused before its first output leaves no empty folder behind. The first that holds
    anything else, or is gone, is left with its parents."""
    for folder in created:
        if not os.path.isdir(folder):  # never made (mkdir failed on it, a name too long, say)
            continue
        try:
            held = {p.name for p in folder.iterdir()}
            if held <= leftovers:
                for name in held:
                    (folder / name).unlink(missing_ok=True)
            folder.rmdir()
        except OSError:  # it holds outputs, or is gone: leave it, and its parents
            return


def _owner_name(path: Path) -> str | None:
    """The user who owns an existing ``path``, by name where the system knows it (else their
    number); None where it is not there, is this process's user's, or owners are not known."""
    try:
        owner = path.lstat().st_uid
    except OSError:
        return None
    if not hasattr(os, "geteuid") or owner == os.geteuid():
        return None
    try:
        import pwd

        return pwd.getpwuid(owner).pw_name
    except (ImportError, KeyError):
        return f"user {owner}"


def ones_own(status: os.stat_result) -> bool:
    """Whether a file (its ``lstat``) is this process's user's (effective): another user's link or
    file in a shared folder is not gone on with, nor written through. True where the system has
    no such owners (Windows)."""
    return not hasattr(os, "geteuid") or status.st_uid == os.geteuid()


def others_link(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a symbolic link that another user made (planted in a shared folder,
    it would take what is written to it wherever it points)."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISLNK(status.st_mode) and not ones_own(status)


def given_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, refusing an empty one: ``Path("")`` is the current folder, so an
    unset variable in a caller's code would read, walk or write there. ``what`` names the
    argument in the message. (``Path("")`` itself is already ``Path(".")``: only a str or
    bytes "" can be told apart.) Anything but a path (None, a number) raises ``TypeError``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"the {what} must be a file path (str or Path), got {type(path).__name__}")
    if os.fspath(path) in ("", b""):
        raise ValueError(f"an empty path names no {what} (it would read as the current folder)")
    if not os.fsdecode(path).strip():  # (a quoting slip: "$OUT " with OUT unset made a folder named " ")
        raise ValueError(f"a path of spaces alone names no {what} ({os.fsdecode(path)!r}: a variable left unset?)")
    return Path(os.fsdecode(path))


def not_a_folder(path: str | os.PathLike[str]) -> str:
    """Why ``path``, given as a folder, is none, in a line for the user: that it does not exist
    (or is a link to nowhere), is a file, or cannot be reached ("nonexist is not a folder" had
    left a user to guess which)."""
    shown = printable_path(os.fsdecode(path))
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"{shown} does not exist" + (" (a link to nowhere)" if os.path.islink(path) else "")
    except OSError as exc:
        return f"{shown} cannot be reached ({exc.strerror or exc})"
    return f"{shown} is a file, not a folder" if os.path.isfile(path) else f"{shown} is not a folder"


def composed_name(name: str) -> str:
    """A file name, or a case ID taken from one, in Unicode's composed form (NFC): a name copied
    through macOS or some SMB shares comes decomposed (u + combining diaeresis for ü), and
    "Müller" in one folder would not match "Müller" in another while both print alike."""
    return unicodedata.normalize("NFC", name)


# Python decodes file names with the locale's encoding: under a Latin-1 or ASCII locale, the
# two bytes of a UTF-8 é come as "Ã©" or as two lone surrogates. Names are UTF-8 on the disk
# whatever the locale, and read as such (utf8_view).
_FILE_NAMES_UTF8 = codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"


def utf8_view(name: str) -> str:
    """A file name as Python gave it (decoded with the locale's encoding), read as UTF-8 instead:
    the same under a UTF-8 locale; bytes that are not UTF-8 come as lone surrogates."""
    return name if _FILE_NAMES_UTF8 else os.fsencode(name).decode("utf-8", "surrogateescape")


def utf8_name(path: str | os.PathLike[str]) -> str | None:
    """``path``'s bytes read as UTF-8, whatever the locale (what SimpleITK, which encodes the name
    it is given as UTF-8, must be given); None where they are not UTF-8 (a Latin-1 name)."""
    try:
        return os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return None


def printable_path(rel: str) -> str:
    """A file's relative path as the CSV gives it: bytes of its name that are not UTF-8 (a
    Latin-1 name from an old export, which Python holds as lone surrogates and no UTF-8 file can
    hold) written as ``\\xfc``, and so a backslash as ``\\\\``, that no two names read alike
    (``M\\xfcller.png`` may be a name itself). A control character (a newline, a tab) is
    written ``\\x0a`` likewise, and a C1 control or a line separator ``\\u0085``: raw, each
    would split a line-based reader's row or a table's.
    Names without any of these, nearly all, are as they are. ``--resume`` compares names in
    this form. The name's bytes are read as UTF-8 whatever the locale (:func:`utf8_view`), so
    that a run resumed under another locale names its files alike."""
    rel = utf8_view(rel)
    if "\\" not in rel and not CONTROL_CHARACTER.search(rel):
        try:
            rel.encode("utf-8")
            return rel
        except UnicodeEncodeError:
            pass
    return terminal_text(rel.replace("\\", "\\\\"))  # (its backslashes doubled: \xfc may be a name's text)


# A cell a spreadsheet takes for a formula (CWE-1236): Excel evaluates =HYPERLINK(...), and
# reads -leading-dash.png as #NAME?, so that the row no longer names its file.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def begins_as_formula(text: str) -> bool:
    """Whether a spreadsheet may read ``text`` as a formula: it begins with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return, after any leading blanks (some spreadsheets skip them on
    import), in any width (``＝`` is ``=`` to Excel's East Asian input, as NFKC makes it)."""
    if text.startswith(FORMULA_START):
        return True
    return unicodedata.normalize("NFKC", text).lstrip(" ").startswith(FORMULA_START)


def spreadsheet_cell(name: str) -> str:
    """A file name or case ID as a CSV of ipp-seg writes it: one that may read as a formula
    (:func:`begins_as_formula`) gets a leading ``'``, which a spreadsheet takes for text (some
    show the ``'``); so does one that begins with ``'`` itself, so that
    :func:`name_of_spreadsheet_cell` reads every cell back to its name."""
    return "'" + name if name.startswith("'") or begins_as_formula(name) else name


def name_of_spreadsheet_cell(cell: str) -> str:
    """The name :func:`spreadsheet_cell` wrote as ``cell``."""
    return cell[1:] if cell.startswith("'") else cell


def printable_file(path: str) -> str:
    """A path as given (absolute, or relative to the working folder) as tables, JSON and
    ``measure --csv`` name it: :func:`printable_path` of its POSIX form, so that a Windows path's
    separators are written ``/`` rather than doubled as a name's backslash is."""
    return printable_path(Path(path).as_posix()) if path else path


_PRINTED_ESCAPE = re.compile(r"(\\\\|\\x[0-9a-f]{2}|\\u[0-9a-f]{4})")


def path_of_printable(printed: str) -> str:
    """The relative path :func:`printable_path` printed as ``printed`` (its inverse): ``\\xfc``
    is the byte 0xfc again (held as a lone surrogate, as Python lists such a name), ``\\\\`` a
    backslash."""
    if "\\" not in printed:
        return printed if _FILE_NAMES_UTF8 else os.fsdecode(printed.encode("utf-8", "surrogateescape"))
    raw = bytearray()
    for part in _PRINTED_ESCAPE.split(printed):
        if part == "\\\\":
            raw += b"\\"
        elif part.startswith("\\u") and _PRINTED_ESCAPE.fullmatch(part):
            raw += chr(int(part[2:], 16)).encode("utf-8")
        elif _PRINTED_ESCAPE.fullmatch(part):
            raw.append(int(part[2:], 16))
        else:
            raw += part.encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(raw))


#: The most bytes :func:`read_json_file` reads: a report or run record is kilobytes, a model card
#: with its training history a few hundred.
JSON_FILE_LIMIT = 16 * 2**20


def read_json_file(path: str | os.PathLike[str], limit: int = JSON_FILE_LIMIT):
    """The JSON value of the regular file at ``path`` (UTF-8). OSError where it cannot be
    opened or read; ValueError where it is no regular file (a pipe or a device: opened without
    waiting, never read), holds more than ``limit`` bytes, or is no JSON, nested too deep for
    the parser included. Files others may plant (in a shared output folder, a models folder)
    had hung a run (a pipe) or ended it in a traceback (a RecursionError), a security review."""
    descriptor = os.open(path, os.O_RDONLY | _NOT_WAITING | getattr(os, "O_BINARY", 0))
    with os.fdopen(descriptor, "rb") as fh:
        found = os.fstat(fh.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise ValueError("not a regular file (a pipe, a device or a folder)")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit:,} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("its values nest too deeply to read") from None
