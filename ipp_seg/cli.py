"""The ipp-seg command line. Thin: parses options, calls the library, renders with rich.

Nothing here imports torch at module level: ``--help``, ``models`` and inference run without it.
"""

from __future__ import annotations

import codecs
import errno
import functools
import inspect
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.table import Table

try:  # the errors of the click that typer runs on: its own copy from typer 0.2x on, the package before
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - typer before it vendored click
    from click import exceptions as click_errors

from . import __version__, configure_logging, quiet_dicom_libraries
from .errors import OUT_OF_MEMORY_SAID
from .launch import stop_as_on_ctrl_c_while_starting as _stop_as_on_ctrl_c_while_starting
from .launch import stop_signals as _stop_signals
from .launch import stopped as _stopped
from .nn.configs import DEFAULT_CONFIG
from .printable import shell_command, terminal_text
from .tables import GuardedStream, print_table
from .tables import new_table as _table

class _HelpWithoutType:
    """typer 0.29 shows its --help flag as taking a value (``--help  <bool>``): shown bare, as the
    other flags are (:func:`_flag`)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Group(_HelpWithoutType, typer.core.TyperGroup):
    pass


class _Command(_HelpWithoutType, typer.core.TyperCommand):
    """typer (0.29) shows an argument's Python type beside it (``SCAN <list[Path]>``) and a
    required one in braces (``{SCAN}...``), which read as syntax to type: shown as click writes
    them (``SCAN...``), the help saying what each is."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = lambda ctx: None
                param._usage_display_name = functools.partial(_argument_in_usage, param)
            elif isinstance(param, typer.core.TyperOption) and not getattr(param, "_range_in_help", False):
                # A number's range in its help, not beside its metavar, where the widest (X [0.0<=x<=0.99999])
                # had narrowed every option's help to about 20 columns (train --help ran to 161 lines).
                param._range_in_help = True
                low, high = getattr(param, "min", None), getattr(param, "max", None)
                if param.help and (low is not None or high is not None):
                    allowed = (f"{low} to {high}" if low is not None and high is not None else
                               f"at least {low}" if low is not None else f"at most {high}")
                    param.help = f"{param.help} ({allowed})"  # (in round brackets: rich takes [x>=1] for markup)
                    param._get_number_range_help_str = lambda: None
        return params

    def parse_args(self, ctx, args):
        # An option of one value given twice: click takes the last without a word (a QA pass: a second --glob had
        # replaced the first, and the files of the first were not measured).
        options_part = args[:args.index("--")] if "--" in args else args  # (after --, arguments only)
        given = [arg for arg in options_part if arg.startswith("-")]
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperOption) and not (param.is_flag or param.multiple or param.count):
                names = [arg for arg in given for opt in param.opts + param.secondary_opts
                         if arg == opt or (opt.startswith("--") and arg.startswith(opt + "="))]
                if len(names) > 1:
                    raise click_errors.UsageError(f"{param.opts[0]} is given {len(names)} times; it takes one value "
                                                  "(the last would be taken without a word): give it once", ctx=ctx)
        return super().parse_args(ctx, args)


def _argument_in_usage(argument) -> str:
    name = argument.metavar or argument.name.upper()
    name = name + "..." if argument.nargs != 1 else name
    return name if argument.required else f"[{name}]"


# Never the locals in a traceback (typer's default in some versions): they may hold a DICOM header.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, cls=_Group,
                  context_settings={"help_option_names": ["-h", "--help"]},  # (-h as most tools take it)
                  # An error that escapes a command reaches main(), which names a stream that could not be
                  # written (typer's own help on a full disk) rather than print a traceback of it.
                  pretty_exceptions_enable=False,
                  help="Segment the pubic symphysis and fetal head in intrapartum transperineal ultrasound "
                       "and measure the angle of progression (AoP) and head-symphysis distance (HSD). Research "
                       "software, not a medical device: not for diagnosis.")


# The command's two streams, each guarded once for the whole run: a reader gone or a failed
# write (a full disk) on one is remembered for every later line, and main() says so at the end.
_GUARDED = {"stdout": GuardedStream("stdout"), "stderr": GuardedStream("stderr")}


# Below this, a COLUMNS value is a setting gone wrong, not a width (some containers export
# COLUMNS=0, at which rich prints nothing at all, error lines included).
_FEWEST_COLUMNS = 20


def _console(stderr: bool = False) -> Console:
    """Piped into a file or a log, rich would assume 80 columns, fold every table cell and
    break error lines in two (so that grep finds half a message); such output gets room for
    whole rows and lines instead. COLUMNS, when set to a usable width, still wins. Whether the
    stream is a terminal is the stream's to say: FORCE_COLOR, exported by many CI setups, would
    otherwise fill a log file with escape codes and a progress bar redrawn ten times a second."""
    stream = _GUARDED["stderr" if stderr else "stdout"]
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):  # no stream at all, or a closed one
        tty = False
    columns = os.environ.get("COLUMNS")
    if _usable_columns(columns):
        width = int(columns)  # (rich would take " 30" for no width)
    elif tty:
        width = None if columns is None else _terminal_columns(stream)  # (rich would read an unusable COLUMNS)
    else:
        width = 240  # tables in a file or log; message lines are not broken at all there
    return Console(file=stream, width=width, soft_wrap=stderr and not tty, force_terminal=None if tty else False)


def _usable_columns(value: str | None) -> bool:
    return value is not None and value.strip().isdigit() and int(value) >= _FEWEST_COLUMNS


def _settle_output_environment() -> None:
    """Forget a COLUMNS that is no width (``0``, ``abc``): typer's own help and usage errors read
    it too, and at 0 they had printed nothing at all; and, where neither stdout nor stderr is a
    terminal, the variables that make rich take a file for one (FORCE_COLOR, TTY_COMPATIBLE), so
    that typer's help and usage errors in a log are plain text, as ipp-seg's own lines are (this
    process's environment only). Where either stream is a file, so: typer writes help to stdout and
    usage errors to stderr, and a terminal is told apart without them."""
    if "COLUMNS" in os.environ:
        if _usable_columns(os.environ["COLUMNS"]):
            os.environ["COLUMNS"] = os.environ["COLUMNS"].strip()  # (" 130": typer's rich reads no width in it)
        else:
            del os.environ["COLUMNS"]
    try:
        terminals = sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminals = False
    if not terminals:  # (where both are, rich sees it without them)
        for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
            os.environ.pop(name, None)
    # A stream that cannot encode every character (Windows' cp1252 when redirected, an ASCII
    # locale) writes the others as \u escapes, as ipp-seg's own lines do: typer's help
    # (evaluate's ΔAoP) had ended in a traceback there. (Python's stdout in the C locale without
    # its UTF-8 mode escapes only a name's undecodable bytes: surrogateescape, no help for a Δ.)
    for stream in (sys.stdout, sys.stderr):
        if _unescaped(stream) and hasattr(stream, "reconfigure"):
            with suppress(Exception):  # (a stream that cannot be reconfigured stays as it is)
                stream.reconfigure(errors="backslashreplace")


#: The fewest columns at which typer's help in boxes keeps every option's name whole (train's, beside "-h").
RICH_HELP_COLUMNS = 84


def _help_width() -> int | None:
    """The columns help is laid out in: COLUMNS where usable, else the terminal's; None for a file
    or a pipe."""
    columns = os.environ.get("COLUMNS")
    if _usable_columns(columns):
        return int(columns)
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stream at all, or a closed one
        return None
    return _terminal_columns(sys.stdout) if tty else None


def _unescaped(stream) -> bool:
    """Whether ``stream`` raises on a character its encoding cannot hold (one that holds them all,
    UTF-8, keeps its handler: surrogateescape writes a file name's bytes back as they were)."""
    errors = getattr(stream, "errors", None)
    if errors == "strict":
        return True
    try:
        return errors == "surrogateescape" and codecs.lookup(stream.encoding).name != "utf-8"
    except (LookupError, TypeError):
        return False


def _terminal_columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


err = _console(stderr=True)


def _stdout() -> Console:
    """The console for tables on stdout."""
    return _console()


def _print_text(text: str) -> None:
    """A line on stdout as it is (no markup, no wrapping), through the guarded stream."""
    stream = _GUARDED["stdout"]
    stream.write(text + "\n")
    stream.flush()


def _print_json(value) -> None:
    """JSON on stdout, whole and exact."""
    _print_text(json.dumps(value, indent=2))


def _print_table(table: Table, turn: bool = True) -> None:
    print_table(table, _stdout(), turn=turn)


def _live_progress() -> bool:
    """Whether stderr takes a live progress display: a terminal, but not a dumb one (TERM=dumb,
    as Emacs shells and some screen readers' terminals set), where a spinner redrawn ten times a
    second is read out or piles up; there, as in a log file, a line now and then."""
    return err.is_terminal and not err.is_dumb_terminal and not err.quiet


def _output_folder(out: Path | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be one, before any work is done."""
    if out is None:
        return
    if not str(out).strip():  # ("$OUT " with OUT unset: a folder named " " had been made)
        fail(f"{option} {str(out)!r} names no folder: spaces alone (a variable left unset?)")
    if str(out).startswith("-"):  # ("--out --workers 2" had made a folder named --workers)
        fail(f"{option} {out}: a folder name that starts with '-' reads as an option left without its value; give "
             f"{option} its folder (the full path for a folder named so)")
    def why(folder: Path) -> str:
        read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
        return "it is on a read-only file system" if read_only else "permission denied"

    try:
        if out.exists() and not out.is_dir():
            fail(f"{option} {out} is a file, not a folder")
        if out.is_dir() and not os.access(out, os.W_OK):  # before the work, not after the first frame
            fail(f"cannot write into {out}: {why(out)}")
        if not out.exists():  # to be made: in the folder above it that exists
            above = next((folder for folder in out.absolute().parents if folder.is_dir()), None)
            if above is not None and not os.access(above, os.W_OK):
                fail(f"cannot make the output folder {out}: {why(above)} ({above})")
    except OSError as exc:  # a folder on the way without search permission
        fail(f"{option} {out} cannot be reached: {exc.strerror or exc}")


def escape(text: str) -> str:
    """``text`` for rich to print as it is: brackets that rich would take for markup escaped, and
    control characters written out (:func:`~ipp_seg.printable.terminal_text`): a file name's ESC
    or carriage return had reached the terminal raw in error and warning lines."""
    return _markup_escape(terminal_text(text))


def _say_anyway(text: str, **settings) -> None:
    """A line on stderr that --quiet does not hold back: an error, or why the command was refused."""
    quiet, err.quiet = err.quiet, False
    try:
        err.print(text, highlight=False, **settings)
    finally:
        err.quiet = quiet


def error(message: str) -> None:
    """Print an actionable error line. The message is escaped: file names and readers' reasons
    may hold brackets that rich would otherwise take for markup (and drop, or fail on)."""
    _say_anyway(f"[bold red]ipp-seg:[/] {escape(message)}")


def fail(message: str, code: int = 2) -> None:
    """Print an actionable error (never a traceback) and exit."""
    error(message)
    raise typer.Exit(code)


def _fail_writing(target: str, exc: OSError, way_on: str = "") -> None:
    """An output that cannot be written: what, the system's reason, the file it met, and
    ``way_on`` (what is kept, and how to go on) when there is one."""
    met = f" ({exc.filename})" if exc.filename and not target.endswith(str(exc.filename)) else ""
    # (The system's "File too large" says nothing of the limit that caused it.)
    limit = " under a file size limit (ulimit -f)" if exc.errno == errno.EFBIG and "ulimit" not in way_on else ""
    fail(f"cannot write {target}: {exc.strerror or exc}{limit}{met}" + (f"; {way_on}" if way_on else ""))


def _flag(*names: str, **settings):
    """An on/off option. The empty metavar keeps typer (0.29) from showing ``<bool>`` beside it
    in the help, which reads as if the flag took a value."""
    return typer.Option(False, *names, metavar="", **settings)


LABELS_HELP = "Label values of the structures in the masks, e.g. ps=128,fh=255 (background is 0)."


def _version(value: bool) -> None:
    if value:
        from .machine import software_version

        _print_text(f"ipp-seg {software_version()}")  # (its code's digest too: rows and reports name it so)
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: bool = _flag("--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = _flag("--verbose", "-v", help="Log progress details to stderr."),
    quiet: bool = _flag("--quiet", "-q", help="Errors only on stderr: no progress, summary or warning lines (a job's "
                                              "mail stays empty unless it failed); stdout and the files written are "
                                              "as without it."),
) -> None:
    if ctx.invoked_subcommand not in _COMMANDS_TAKING_STOPS:
        _stop_by_an_exception()
    if quiet and verbose:
        fail("--quiet and --verbose ask for opposite things: give one of them")
    # (Set at each call: the console outlives a command run within another program, as in tests.)
    err.quiet = quiet
    configure_logging(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    # OpenCV's own lines about a damaged image ("[ WARN:0@0.4] global grfmt_png.cpp ...") come
    # before ipp-seg's one-line reason for the same file; read when OpenCV loads (the user's
    # own setting wins). Worker processes inherit it.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    quiet_dicom_libraries()  # their warnings may quote a patient's name; worker processes do the same


@app.command(cls=_Command, short_help="List the shipped models, with their validation, and the network configs.")
def models(as_json: bool = _flag("--json", help="JSON on stdout: {models: [{name, default, config, card, files: "
                                                "{onnx, torch: {path, sha256, present, readable, matches_card}}, "
                                                "validation, validated_by, trained_case_ids}], configs: [...]}."),
           ) -> None:
    """List the shipped models (with their model cards' validation metrics) and the network
    configs (parameters, MACs at 256x256)."""
    from .inference.registry import (DEFAULT_MODEL, describe_models_dir, mismatched_files_said, model_summary,
                                     models_dir, shipped_models, unreadable_cards_said, unreadable_files_said,
                                     unusable_models_dir)
    from .nn.configs import list_configs

    folder = models_dir()
    unusable = unusable_models_dir(folder)
    specs = [] if unusable else shipped_models()
    if not unusable and not specs:  # (every card closed to this user: "no models found", exit 0, had been said)
        unusable = unreadable_cards_said(folder)
    # (Listed, and then refused: a model file its users may not read had ended `models` in a traceback, a QA pass.)
    # A file that is not its card's is said by the exit status too (a QA check that runs `models` had read 0).
    files_closed = unreadable_files_said(specs) or mismatched_files_said(specs)
    if as_json:  # (a pipeline that pins weights checks them here, not in the table)
        if unusable:
            fail(unusable)
        _print_json({"models": [model_summary(spec) for spec in specs],
                     "configs": [{"name": c.name, "attention": c.attention, "in_channels": c.in_channels,
                                  "params": c.params, "macs_256": c.macs_256} for c in list_configs()]})
        if files_closed:
            fail(files_closed)
        return
    # A folder of one's own ($IPP_SEG_MODELS) holds models validated on their own frames, not PSFHS's blocks.
    own = bool(os.environ.get("IPP_SEG_MODELS"))
    shipped = _table(f"Models in {describe_models_dir(folder)}" if own else "Shipped models",
                     ("model", "config", "validation", "Dice PS", "Dice FH", "median |ΔAoP| (°)", "score", "files"))
    shipped.caption = ("Validation over each model's held-out frames (its card says which, and how many): |ΔAoP| "
                       "is the predicted mask's AoP against the ground-truth mask's, ellipse method, as is the "
                       "FH-PS-AOP score" if own else
                       "Validation over both held-out blocks: |ΔAoP| is the predicted mask's AoP against the "
                       "ground-truth mask's, ellipse method, as is the FH-PS-AOP score; per block, against "
                       "aop_reference.csv and with --tta: the model cards")
    for spec in specs:
        metrics, mismatched = spec.validation, spec.mismatched_files
        # A model trained on every frame shows its held-out twin's figures, and says so.
        held_out = f"{metrics['cases']} held-out frames" if own and metrics.get("cases") else "held-out blocks"
        if (spec.card or {}).get("validation_trained_on_before"):  # a fit there, not a validation
            held_out += " (an earlier run trained on some)"
        validated = (f"of {spec.validated_by} (this model saw every frame)" if spec.validated_by
                     else held_out)
        if mismatched:  # the card's figures describe other weights: none shown (loading it is refused too)
            metrics, validated = {}, "none: a file is not the one its card describes"
        files = ", ".join(p.name + (" (missing)" if p in spec.missing_files else
                                    " (cannot be read)" if p in spec.unreadable_files else
                                    " (not the card's: sha256 differs)" if p in mismatched else "")
                          for p in (spec.onnx_path, spec.torch_path) if p is not None)
        name = spec.name + (" (default)" if spec.name == DEFAULT_MODEL else "")
        shipped.add_row(escape(name), escape(str((spec.card or {}).get("config", ""))),
                        validated if metrics or mismatched else "",
                        _fmt(metrics.get("dice_ps"), 3), _fmt(metrics.get("dice_fh"), 3),
                        _fmt(metrics.get("median_abs_delta_aop_deg"), 2),
                        _fmt(metrics.get("score"), 3), escape(files))
    if not unusable:
        if shipped.row_count:
            _print_table(shipped)
        else:
            _stdout().print(escape(f"No models found in {folder}: a model needs its JSON card beside it, as "
                                   "scripts/ship_model.py writes it (any ONNX file from ipp-seg export also runs "
                                   "with --model PATH)."))
    table = _table("Network configs", ("config", "attention", "input ch", "params (M)", "GMACs @256", "notes"))
    for c in list_configs():
        table.add_row(c.name, c.attention, str(c.in_channels), f"{c.params / 1e6:.2f}", f"{c.macs_256 / 1e9:.2f}",
                      c.notes)
    _print_table(table)
    if unusable:  # after the configs, which need no files
        fail(unusable)
    if files_closed:
        fail(files_closed)


def _float_list(text: str, count: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) and v >= 0 for v in values):
        fail(f"{option} takes {count} non-negative numbers separated by commas, got {text!r}")
    return values  # all 0 (a loss of 0/0) is the training library's to refuse, with the option named


# train's options whose TrainSettings field has another name.
_SETTING_OF_OPTION = {"ce_weights": "ce_class_weights", "dice_weights": "dice_class_weights", "labels": "mask_labels",
                      "elastic": "augmentation.elastic_probability", "shadow": "augmentation.shadow_probability",
                      "local_contrast": "normalisation.local_contrast"}


def _given_settings(ctx: typer.Context) -> dict[str, list[str]]:
    """The training settings typed on the command line, each with the options that set it: a
    resumed run refuses those that differ from its recipe, rather than ignore them."""
    given: dict[str, list[str]] = {}
    for param in ctx.command.params:
        if param.name != "resume" and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE":
            given.setdefault(_SETTING_OF_OPTION.get(param.name, param.name), []).append(param.opts[0])
    return given


@app.command(cls=_Command, short_help="What each reason code in a result means.")
def reasons(codes_asked: Optional[list[str]] = typer.Argument(
                None, metavar="CODE", show_default=False,
                help="Only these codes; a CSV's reasons cell may be pasted as it is (ps_cut_off;aop_impossible)."),
            as_json: bool = _flag("--json", help="JSON on stdout: a list of {code, status, aop_doubtful, "
                                                  "hsd_doubtful, meaning, action}.")
            ) -> None:
    """Every reason code a row, report or SR can carry, and what to do about it: `failed` ones
    leave no values, `warning` ones keep the values they do not concern (the CSV joins a row's
    codes with ';'). The doubt columns say which warnings mark the row's AoP or HSD doubtful
    (the CSV's aop_doubtful and hsd_doubtful)."""
    from .inference.batch import reason_actions, reason_codes, reasons_asked
    from .measure.result import ANGLE_IN_DOUBT, HSD_IN_DOUBT

    codes, actions = reason_codes(), reason_actions()
    if codes_asked:
        codes, unknown = reasons_asked(codes_asked)
        if not codes and not unknown:  # (only separators: ';')
            fail("no reason code given: name one or more (ipp-seg reasons ps_cut_off), or none for them all")
        if unknown:
            fail("; ".join(f"no reason code {code!r}" + (f" (did you mean {' or '.join(near)}?)" if near else "")
                           for code, near in unknown.items()) + "; `ipp-seg reasons` lists them all")
    if as_json:
        _print_json([{"code": c, "status": s, "aop_doubtful": c in ANGLE_IN_DOUBT, "hsd_doubtful": c in HSD_IN_DOUBT,
                      "meaning": m, "action": actions[c]} for c, s, m in codes])
        return
    table = _table("Reason codes", ("code", "status", "AoP doubtful", "HSD doubtful", "what to do", "meaning"))
    def doubt(code: str, status: str, doubted: frozenset) -> str:
        # "no" said, not left blank (a screen reader reads nothing there); a failed row has no value to doubt.
        return "yes" if code in doubted else "-" if status == "failed" else "no"
    for code, status, meaning in codes:
        table.add_row(code, status, doubt(code, status, ANGLE_IN_DOUBT), doubt(code, status, HSD_IN_DOUBT),
                      escape(actions[code]), escape(meaning))
    _print_table(table, turn=False)


def _command_line() -> str:
    """The command as typed, quoted so that a shell runs it again (a run's record of how it was made)."""
    return shell_command(["ipp-seg", *sys.argv[1:]])


@app.command(cls=_Command, short_help="Train a network on labelled frames (needs the \\[train] extra: torch).")
def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., metavar="DATA",
                                help="Folder in PSFHS layout (image_mha/, label_mha/), of image/mask pairs "
                                     "(images/ + masks/), or of <case>.png beside <case>_mask.png."),
    config: str = typer.Option(DEFAULT_CONFIG, "--config", help="Network config (see `ipp-seg models`)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, split, history."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                         help="Epochs in all (default 80; with --resume, the run's own "
                                              "unless more are given)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Frames per training step."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Peak learning rate (above 0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, the augmentation and the batch order "
                                                "(the split goes by case ID)."),
    validation_count: int = typer.Option(200, "--validation-count", min=0,
                                         help="The last N case IDs are validation."),
    extra_validation: Optional[str] = typer.Option(
        None, "--extra-validation",
        help="Another contiguous validation block, FIRST-LAST (IDs; FIRST..LAST where they hold a hyphen)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for torch."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16",
                                        help="bf16 autocast (default: where the CPU or GPU computes bf16 natively)."),
    resume: bool = _flag("--resume", help="Continue the run in --out from its last checkpoint."),
    init_from: Optional[Path] = typer.Option(None, "--init-from",
                                             help="Start from this checkpoint's weights (new optimiser and schedule)."),
    warmup_epochs: float = typer.Option(2.0, "--warmup-epochs", help="Epochs of linear warm-up (0 or more)."),
    ce_weights: str = typer.Option("1,2,1", "--ce-weights", help="Cross-entropy weights: background,PS,FH."),
    dice_weights: str = typer.Option("1.5,1", "--dice-weights", help="Soft-Dice weights: PS,FH."),
    shape_weight: float = typer.Option(0.0, "--shape-weight", min=0.0,
                                       help="Weight of the PS centroid and second-moment loss (aimed at the AoP)."),
    boundary_weight: float = typer.Option(0.0, "--boundary-weight", min=0.0,
                                          help="Weight of the PS boundary-distance loss: predicted PS probability "
                                               "charged by its distance (px) from the true PS (aimed at the AoP)."),
    ema_decay: float = typer.Option(0.0, "--ema-decay", min=0.0, max=0.99999,
                                    help="Keep, validate and ship an exponential moving average of the weights "
                                         "with this decay per step (0: off; 0.998 averages ~5 epochs)."),
    endpoint_weight: float = typer.Option(0.0, "--endpoint-weight", min=0.0,
                                          help="Weight of a training-only heatmap head for the PS's long-axis "
                                               "ends (aimed at the AoP; the shipped network is unchanged)."),
    deep_supervision: float = typer.Option(0.0, "--deep-supervision", min=0.0,
                                           help="Weight of a loss on each coarse decoder level's own class "
                                                "logits (training-only heads; the shipped network is unchanged)."),
    elastic: float = typer.Option(0.0, "--elastic", min=0.0, max=1.0,
                                  help="Probability of a smooth elastic deformation per training frame."),
    shadow: float = typer.Option(0.0, "--shadow", min=0.0, max=1.0,
                                 help="Probability of a simulated acoustic shadow per training frame."),
    drop_path: Optional[float] = typer.Option(None, "--drop-path", min=0.0, max=0.5,
                                              help="Stochastic depth of the deepest block in training (default: "
                                                   "the config's; the shipped network is unchanged)."),
    input_size: int = typer.Option(256, "--input-size", min=64, max=1024,
                                   help="Side of the square network input, px: frames are resized to it as "
                                        "inference resizes them, and the loss is taken on the labels' own grid."),
    local_contrast: float = typer.Option(0.0, "--local-contrast", min=0.0,
                                         help="CLAHE clip limit applied in the input normalisation (0: off); "
                                              "stored in the model, so inference applies it too."),
    labels: str = typer.Option("ps=1,fh=2", "--labels", help=LABELS_HELP),
) -> None:
    """Train a network on labelled frames (needs the \\[train] extra: torch)."""
    if device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}")
    try:
        from .inference.preprocess import DEFAULT_NORMALISATION, with_local_contrast
        from .train.data import AugmentationSettings, parse_id_range
        from .train.loop import (RecipeChangedError, RunWriteError, TrainingDiverged, TrainSettings,
                                 check_checkpoint_path, train as run_training)
    except ImportError as exc:
        fail(f"training needs torch: pip install -e '.[train]' in the ipp-seg clone ({exc})")
    extra = None
    if extra_validation:
        # FIRST..LAST for IDs that hold a hyphen themselves (pt-02-f0..pt-02-f2), else FIRST-LAST.
        try:
            extra = parse_id_range(extra_validation)
        except ValueError as exc:
            fail(f"--extra-validation: {exc}")
    # The library takes a rate of 0 (weights carried over unchanged); from the command line it trains nothing.
    # A negative warm-up, like all-zero class weights, the library refuses itself.
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        fail(f"--lr must be a finite number above 0, got {learning_rate:g}")
    ce = _float_list(ce_weights, 3, "--ce-weights")
    dice_w = _float_list(dice_weights, 2, "--dice-weights")
    if init_from is not None:
        try:
            check_checkpoint_path(init_from)
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--init-from: {exc}")
    if epochs is None:
        epochs = 0 if resume else 80  # 0: a resumed run keeps the length it was planned with
    settings = TrainSettings(config=config, data=str(data), out=str(out), epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, validation_count=validation_count,
                             extra_validation=extra, device=device, threads=threads, bf16=bf16,
                             warmup_epochs=warmup_epochs, ce_class_weights=ce, dice_class_weights=dice_w,
                             shape_weight=shape_weight, ema_decay=ema_decay, endpoint_weight=endpoint_weight,
                             deep_supervision=deep_supervision, boundary_weight=boundary_weight,
                             init_from=str(init_from) if init_from else None, drop_path=drop_path,
                             input_size=(input_size, input_size), mask_labels=_parse_labels(labels),
                             augmentation=AugmentationSettings(elastic_probability=elastic,
                                                               shadow_probability=shadow),
                             normalisation=(with_local_contrast(DEFAULT_NORMALISATION, local_contrast)
                                            if local_contrast > 0 else dict(DEFAULT_NORMALISATION)))
    given = _given_settings(ctx)
    total_epochs = settings.epochs  # a resumed run's own, once it starts (on_start)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # A live bar on a terminal only: in a log it had printed its last state after the epoch's line, with the last
    # step's loss beside the epoch's mean (a research fellow's pass); a log has the epoch lines.
    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=err,
                        disable=not _live_progress())
    task = progress.add_task("train", total=None, epoch="-", loss=float("nan"))

    def on_start(running, split) -> None:
        nonlocal total_epochs
        total_epochs = running.epochs
        err.print(f"split: {escape(split.describe())}", highlight=False)  # before hours of training, not after

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        # Shown from the first step: a run refused while its data are checked leaves no empty bar.
        progress.start()
        progress.update(task, total=steps, completed=step, epoch=f"{epoch}/{total_epochs}", loss=loss)

    def on_epoch(r) -> None:
        if math.isnan(r.score):  # --validation-count 0: every frame trains, the last epoch is kept
            scores = "no validation frames"
        else:
            scores = f"val Dice PS {r.dice_ps:.4f} FH {r.dice_fh:.4f}" + ("  [green]best[/]" if r.is_best else "")
        progress.console.print(f"epoch {r.epoch}/{r.epochs}  loss {r.train_loss:.4f}  {scores}  {r.seconds:.0f} s")

    # A job scheduler's stop (SIGTERM: kill, SLURM, docker stop), or the hang-up of the session a
    # job was started from, ends the run like Ctrl-C does.
    previous_signals = _stop_on_signals()
    failure = None
    try:
        result = run_training(settings, resume=resume, on_epoch=on_epoch, on_step=on_step,
                              given=given, on_start=on_start, command=_command_line())
    except RecipeChangedError as exc:
        options = [option for key in exc.settings for option in given[key]]
        differ, them = ("differ", "them") if len(options) > 1 else ("differs", "it")
        failure = (f"--resume continues {out} as it was planned, and {', '.join(options)} {differ} from its recipe: "
                   f"leave {them} out, or start a new run (another --out) from it with --init-from {out / 'last.pt'}",
                   2)
        if exc.planned_epochs:
            failure = (f"--resume continues {out} as it was planned, over {exc.planned_epochs} epochs: --epochs "
                       f"{epochs} is fewer; leave it out, or give more", 2)
    except TrainingDiverged as exc:  # the recipe ran, and its loss stopped being a number
        failure = (str(exc), 1)
    except RunWriteError as exc:  # the disk filled, or the folder became read-only, mid-run
        held = (f"{out / 'last.pt'} holds the last epoch written in full; once the folder can be written, --resume "
                "continues from it") if (out / "last.pt").is_file() else "no epoch was saved"
        failure = (f"{exc}; {held}", 1)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        failure = (str(exc).strip('"'), 2)
    except KeyboardInterrupt:
        if (out / "last.pt").is_file():
            failure = (f"interrupted: {out / 'last.pt'} holds the last finished epoch; --resume continues from it",
                       130)
        else:
            failure = ("interrupted before any epoch finished: there is nothing to resume; the same command, "
                       "without --resume, starts the run again", 130)
    finally:
        if progress.live.is_started:  # (a bar never shown is not stopped: rich would print an empty line)
            progress.stop()  # before the error line, not after it
        _restore_signals(previous_signals)
    if failure is not None:
        fail(*failure)
    if math.isnan(result.best_score):
        err.print(f"no validation frames: best.pt is the last epoch ({result.best_epoch}); "
                  f"checkpoints in {escape(str(result.run_dir))}", highlight=False)
    else:
        err.print(f"best epoch {result.best_epoch}: score {result.best_score:.4f}; "
                  f"checkpoints in {escape(str(result.run_dir))}", highlight=False)
    # The next step, where the run's end leaves the user (a research fellow had found it in the install notes).
    best = shlex.quote(str(result.run_dir / "best.pt"))
    err.print(escape(f"to measure with it: ipp-seg export {best} --onnx MODEL.onnx, then --model MODEL.onnx (or "
                     f"--model {best} --backend torch)"), highlight=False)


# --- inference --------------------------------------------------------------------------------

MODEL_OPT = typer.Option(None, "--model", help="Shipped model name (see `ipp-seg models`; default dssau-net-s) or "
                                                "a .onnx/.pt file.")
BACKEND_OPT = typer.Option("onnx", "--backend", help="onnx (default, no torch needed) or torch.")
DEVICE_OPT = typer.Option("cpu", "--device", help="cpu or cuda (falls back to cpu with a warning).")
METHOD_OPT = typer.Option("ellipse", "--method", help="AoP method: ellipse (default), challenge or contour.")
ORIENTATION_OPT = typer.Option("standard", "--orientation",
                               help="standard: the PS's inferior end is its right-hand end as displayed; "
                                    "mirrored: the left-hand end.")
FRAMES_OPT = typer.Option("all", "--frames", help="Which frames of each scan: all, N, A-B or A-end (0-based; a "
                                                   "range takes those a scan has), /S after one for every S-th frame "
                                                   "(all/10: 0, 10, 20, ...), or a list of frames and ranges (0,5,9 or "
                                                   "0-4,20); a scan with none of them gets a failed row.")
SPACING_OPT = typer.Option(None, "--spacing-mm",
                           help="mm per pixel X[,Y] for files without a calibration (a file's own calibration, "
                                "DICOM or MHA/NIfTI spacing, wins).")
THREADS_OPT = typer.Option(None, "--threads", min=1, max=256,
                           help="CPU threads for the model in each process (default: the CPUs this process may use, "
                                "shared among batch's --workers; onnxruntime does not read OMP_NUM_THREADS).")
TTA_OPT = _flag("--tta", help="Average with the mirrored frame's output: twice the model time; on validation a "
                                 "little better Dice, no better angle.")


def _parse_labels(text: str, option: str = "--labels") -> tuple[int, int]:
    """``ps=P,fh=F`` -> (P, F): two different positive label values."""
    try:
        label_map = {k.strip(): v.strip() for k, v in (part.split("=") for part in text.split(","))}
        ps_label, fh_label = int(label_map.pop("ps")), int(label_map.pop("fh"))
    except (ValueError, KeyError):
        fail(f"{option} must look like ps=1,fh=2, got {text!r}")
    if label_map:
        fail(f"{option} names the PS and FH only (background is 0), got {', '.join(label_map)} too")
    if ps_label <= 0 or fh_label <= 0 or ps_label == fh_label:
        fail(f"{option} needs two different positive values (0 is background), got {text!r}")
    return ps_label, fh_label


def _parse_spacing(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    from .measure.progress import check_plausible_spacing
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        fail(f"--spacing-mm must be X or X,Y in mm per pixel, got {text!r}")
    # "0,35" from a locale that writes decimal commas reads as two spacings, 0 and 35 mm.
    comma = (f" (for {text.replace(',', '.')} mm write a point; a comma separates X from Y)"
             if text.count(",") == 1 and "." not in text else "")
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        fail(f"--spacing-mm must be one or two positive numbers, got {text!r}{comma}")
    try:
        check_plausible_spacing((values[0], values[-1]))
    except ValueError as exc:
        fail(f"--spacing-mm {text}: {exc}{comma}")
    return (values[0], values[-1])


def _check_choices(method: str, orientation: str, frames: str, backend: str, device: str) -> None:
    from .inference.batch import check_inference_choices

    try:
        check_inference_choices(method, orientation, frames, backend, device)
    except ValueError as exc:
        fail(f"--{exc}")


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None or value == "" else f"{float(value):.{digits}f}"


def _status_text(status: str, reasons: str) -> str:
    colour = {"ok": "green", "warning": "yellow", "failed": "red"}.get(status, "white")
    # "; " between reasons: a narrow table wraps between them rather than inside one. A failed
    # frame's cause first: "failed (ps_cut_off; spacing_unknown)", not behind the warnings.
    from .measure.result import failing_reasons_first

    shown = "; ".join(failing_reasons_first(reasons.split(";"))) if reasons else ""
    return f"[{colour}]{status}[/]" + (f" ({escape(shown)})" if shown else "")


def _settings_said(inference: InferenceOptions) -> str:
    """The options given that change a frame's numbers, where they are not the defaults
    (``--method challenge, --tta``); empty where all are."""
    default = type(inference)()
    said = [f"--method {inference.method}" if inference.method != default.method else "",
            f"--orientation {inference.orientation}" if inference.orientation != default.orientation else "",
            "--tta" if inference.tta != default.tta else ""]
    return ", ".join(s for s in said if s)


def _results_table(rows: list[dict], title: str, network: bool = True) -> Table:
    """One row per frame; ``network``: the masks came from a model, whose name and time are shown."""
    # A cine's frames with their time in the loop, where a header gives it (the rows' frame_time_ms, in s).
    timed = any(r.get("frame_time_ms") not in (None, "") for r in rows)
    columns = [("file", "left"), ("frame", "right"), *((("t (s)", "right"),) if timed else ()), ("AoP (°)", "right"),
               ("HSD (mm)", "right"), ("HSD (px)", "right"), ("status", "left")]
    table = _table(title, (*columns, ("model", "left"), ("took (ms)", "right")) if network else columns)
    # A cine's frames share model calls, and each waits for the frames after it (aop_unsteady): the time between
    # two results had read 1,000 ms for a loop's first frame and 0 for the rest. Each is shown the loop's mean.
    loop_times: dict[str, list[float]] = {}  # per cine: its frames' times, and how many were measured
    for r in rows:
        if (r.get("n_frames") or 1) > 1 and r.get("time_ms") not in (None, ""):
            spent = loop_times.setdefault(r["file"], [0.0, 0])
            spent[0] += float(r["time_ms"])
            spent[1] += r["status"] != "failed"
    for r in rows:
        status = _status_text(r["status"], r["reasons"] if not r.get("error") else f"{r['reasons']}: {r['error']}")
        # A value a warning puts in doubt reads so in words, as on the overlay (the row's own
        # aop_doubtful and hsd_doubtful say which).
        at = (_fmt(None if r.get("frame_time_ms") in (None, "") else float(r["frame_time_ms"]) / 1000, 3),) \
            if timed else ()
        cells = [escape(str(r["file"])), str(r["frame"]), *at, _doubted(r["aop_deg"], r["aop_doubtful"]),
                 _doubted(r["hsd_mm"], r["hsd_doubtful"]), _doubted(r["hsd_px"], r["hsd_doubtful"]), status]
        took = r.get("time_ms")
        if r["file"] in loop_times:  # (the loop's mean; a frame not measured: none)
            spent, measured = loop_times[r["file"]]
            took = None if r["status"] == "failed" else spent / measured
        table.add_row(*cells, *((escape(str(r.get("model", ""))), _fmt(took, 0)) if network else ()))
    return table


def _doubted(value, doubt_cell: str) -> str:
    """A table's value, with " (doubtful)" where its row's doubt cell is "true"."""
    shown = _fmt(value)
    return shown + " (doubtful)" if doubt_cell == "true" and value not in (None, "") else shown


def _say_messages(item) -> None:
    """On stderr, as they come: a run item's errors (a scan or mask that could not be used, an
    output refused) and warnings (PredictedFrame, MeasuredMask). A folder given as a scan gets
    the command that measures its scans, not "is a directory"."""
    scan = getattr(item, "scan", None)
    if scan is not None and item.errors and Path(scan).is_dir():
        folder = str(scan)
        error(f"{folder} is a folder: `ipp-seg batch {folder} --out OUT` measures the scans in it (and its "
              "sub-folders) into one CSV")
        return
    for message in item.errors:
        error(message)
    for message in item.warnings:
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def _load_processor(options):
    from .inference.backends import BackendError
    from .inference.batch import FileProcessor
    from .inference.registry import ModelNotFoundError

    try:
        return FileProcessor(options)
    except (ModelNotFoundError, BackendError) as exc:
        fail(str(exc))


@app.command(cls=_Command, short_help="Segment and measure scans; a table, JSON, masks, overlays, DICOM SEG/SR.")
def predict(
    scans: list[Path] = typer.Argument(..., metavar="SCAN", help="DICOM, PNG/JPEG/BMP/TIFF or MHA/NRRD/NIfTI files.",
                                       readable=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Write mask PNG, overlay PNG and JSON per frame here."),
    json_output: bool = _flag("--json", help="Print JSON on stdout (all else on stderr)."),
    dicom_seg: bool = _flag("--dicom-seg", help="With --out: a DICOM Segmentation per DICOM frame."),
    dicom_sr: bool = _flag("--dicom-sr", help="With --out: a DICOM Comprehensive SR per DICOM frame."),
    model: Optional[str] = MODEL_OPT, backend: str = BACKEND_OPT, device: str = DEVICE_OPT,
    method: str = METHOD_OPT, orientation: str = ORIENTATION_OPT, frames: str = FRAMES_OPT,
    spacing_mm: Optional[str] = SPACING_OPT, tta: bool = TTA_OPT,
    # batch's options, which users try here: said what predict does instead, not "No such option".
    overlays_asked: bool = typer.Option(False, "--overlay", "--overlays", "--save-masks", hidden=True),
    threads: Optional[int] = THREADS_OPT,
) -> None:
    """Segment and measure scans; print a table (or JSON). Exit 0: all measured; 1: a
    measurement failed (a cine's frame too, beside frames measured); 2: unusable input (a scan
    of no frame measured) or options, or an output that could not be written;
    130 on Ctrl-C, SIGTERM or SIGHUP (the frames measured so far printed).
    What each status reason means: ipp-seg reasons."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .inference.batch import BatchOptions, InferenceOptions, RunAdvice, cine_frames_not_checked_of_scans
    from .inference.report import predict_scans
    from .io.folders import printable_path

    _check_choices(method, orientation, frames, backend, device)
    if any(str(scan) == "-" for scan in scans):  # (read as a file named "-": "no such file")
        fail("predict reads scans from files: '-' (standard input) is not read; give the scan's path (its full path "
             "for a file named -)")
    if overlays_asked and out is None:
        fail("predict writes a mask PNG, an overlay PNG and a JSON report per frame into --out DIR: give --out DIR "
             "(--overlays and --save-masks are batch's options)")
    if (dicom_seg or dicom_sr) and out is None:
        fail("--dicom-seg and --dicom-sr need --out DIR")
    if dicom_seg or dicom_sr:
        from .io.dicom_results import require_highdicom

        try:
            require_highdicom()  # before any scan is measured, not at the first DICOM one
        except ImportError as exc:
            fail(str(exc))
    _output_folder(out)
    if out is not None:  # made now, before the model loads: not said after a table of nothing
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot make the output folder {out}: {exc.strerror or exc}")
    inference = InferenceOptions(model, backend, device, method, orientation, frames, _parse_spacing(spacing_mm), tta,
                                 threads)
    processor = _load_processor(BatchOptions(Path("."), out or Path("."), inference))
    settings = _settings_said(inference)
    err.print(f"model {escape(processor.model_name)} on {_device_name(processor.segmenter.provider)}"
              f"{', ' + settings if settings else ''}", highlight=False)
    rows, reports = [], []
    measurement_failed = unwritten = interrupted = False
    unusable_scans: set = set()  # scans with a frame (or the file) that could not be read or segmented
    measured_scans: set = set()  # scans with a frame segmented
    write_failure: OSError | None = None
    finished: list[Path] = []  # scans whose every frame was measured (a stop names the others)
    # Ctrl-C, a job scheduler's SIGTERM or a hang-up: the frames measured so far are printed, and
    # what was not measured said, as batch does (it had ended with no word and no row, exit 143).
    previous_signals = _stop_on_signals()
    # A long cine or many scans: a live count on a terminal (gone when done; not in logs).
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True, disable=not _live_progress()) as progress:
        task = progress.add_task("", total=None)
        try:
            for predicted in predict_scans(processor, scans, out, dicom_seg=dicom_seg, dicom_sr=dicom_sr):
                _say_messages(predicted)
                # A scan none of whose frames could be measured is unusable input (2); a cine's frame that failed
                # beside others measured is a failed measurement (1): a script had thrown away a cine's good frames.
                (unusable_scans if predicted.unusable else measured_scans).add(predicted.scan)
                unwritten |= predicted.outputs_refused
                measurement_failed |= predicted.measurement_failed
                rows.append(predicted.row)
                reports.append(predicted.report)
                if not finished or finished[-1] != predicted.scan:
                    finished.append(predicted.scan)
                progress.update(task, description=f"{_count(len(rows), 'frame')} measured, now "
                                                  f"{escape(Path(predicted.scan).name)}")
        except KeyboardInterrupt:
            interrupted = True
        except ImportError as exc:
            fail(str(exc))
        except OSError as exc:  # (reading failures are rows, not exceptions: this is writing)
            if out is None:
                fail(str(exc))
            write_failure = exc  # (said after the frames measured before it, as a stop is)
        finally:
            _restore_signals(previous_signals)
    if write_failure is not None and not rows:  # nothing measured to show: the failure alone
        _fail_writing(f"into {out}", write_failure)
    if json_output:
        _print_json(reports)
    else:
        # Scans side by side (a table turned) read, by a screen reader or at a glance, as one
        # line holding pieces of two scans' reasons: too narrow a terminal gets a card per scan.
        # (The options that change the numbers, where not the defaults: a table copied alone says how it was made.)
        _print_table(_results_table(rows, f"ipp-seg predict{' (' + settings + ')' if settings else ''}"),
                     turn=len(rows) <= 1)
    advice = RunAdvice.of_rows(rows)
    if not json_output:
        _say_what_reasons_ask(rows, advice, orientation, overlays_written=out is not None)
    _advise(advice, orientation)
    _say_cine_frames_not_checked(*cine_frames_not_checked_of_scans(rows))
    if write_failure is not None or interrupted:
        # The frames above are whole (with their outputs); the scans after them are named.
        if finished and (reports[-1].get("n_frames") or 1) > 1:
            finished.pop()  # (a cine may have frames left)
        done = set(finished)
        left = [scan for scan in scans if scan not in done]
        shown = ", ".join(printable_path(str(scan)) for scan in left[:3]) + (
            f" and the {len(left) - 3} after them as given" if len(left) > 3 else "")
        measured = (f"{_count(len(rows), 'frame')} measured (above"
                    f"{', with their outputs in ' + printable_path(str(out)) if out is not None and rows else ''}); "
                    f"{_count(len(left), 'scan')} not measured in full: {shown}")
        if write_failure is not None:
            _fail_writing(f"into {out}", write_failure, f"{measured}; once the folder can be written, give them to "
                                                        "predict again (the first one's files there may be partial)")
        fail(f"interrupted: {measured}; give them to predict again", code=130)
    if unwritten or unusable_scans - measured_scans:
        raise typer.Exit(2)
    if measurement_failed or unusable_scans:
        raise typer.Exit(1)


@app.command(cls=_Command, short_help="Measure every scan in a folder into one CSV, resumable, in parallel.")
def batch(
    in_dir: Path = typer.Argument(..., metavar="IN_DIR", help="Folder of scans (walked recursively).", readable=False),
    out: Path = typer.Option(..., "--out", help="Output folder: measurements.csv, masks/, overlays/, dicom-results/."),
    glob: str = typer.Option("**/*", "--glob", help="Which files to take, e.g. '**/*.dcm'."),
    exclude: Optional[list[str]] = typer.Option(
        None, "--exclude", metavar="PATTERN",
        help="Files, or folders with all they hold, to leave out, e.g. 'viewer' or '**/*.pdf' (repeatable)."),
    save_masks: bool = _flag("--save-masks", help="Write label masks (0/1/2) as PNG under masks/."),
    overlays: bool = _flag("--overlays", help="Write overlay PNGs under overlays/."),
    dicom_seg: bool = _flag("--dicom-seg", help="Write a DICOM Segmentation per DICOM frame under dicom-results/."),
    dicom_sr: bool = _flag("--dicom-sr", help="Write a DICOM Comprehensive SR per DICOM frame under dicom-results/."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel processes (each loads the model once)."),
    resume: bool = _flag("--resume",
                                help="Go on with the run in OUT: skip what measurements.csv already holds (files "
                                     "that could not be read, and files changed since, are measured again)."),
    overwrite: bool = _flag("--overwrite",
                                   help="Replace a measurements.csv that already holds rows (without --resume or "
                                        "this, such a folder is refused)."),
    verify: bool = _flag("--verify",
                         help="With --resume: read every measured file again and measure again those whose bytes "
                              "are not their rows' file_sha256 (a file replaced under the same size and time); "
                              "slower, as every file is read."),
    remeasure_other_versions: bool = _flag(
        "--remeasure-other-versions",
        help="With --resume: measure again the files of rows another version of ipp-seg wrote (after an upgrade); "
             "their earlier rows are kept in rows_taken_out.csv."),
    model: Optional[str] = MODEL_OPT, backend: str = BACKEND_OPT, device: str = DEVICE_OPT,
    method: str = METHOD_OPT, orientation: str = ORIENTATION_OPT, frames: str = FRAMES_OPT,
    spacing_mm: Optional[str] = SPACING_OPT, tta: bool = TTA_OPT, threads: Optional[int] = THREADS_OPT,
    engine: str = typer.Option("local", "--engine",
                               help="local (processes here) or ray (a Ray cluster; \\[ray] extra)."),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="Ray cluster address (e.g. auto or ray://host:10001); default: "
                                               "the cluster in RAY_ADDRESS or one running here, else a local "
                                               "Ray instance."),
) -> None:
    """Measure every scan in a folder into OUT/measurements.csv, one row per frame. Exit 0 when
    the run finished (rows may have failed: see the status column); 1 when no frame of it (or,
    resumed, of the whole CSV) could be measured; 2 for unusable options, no matching files, an
    output folder that holds an earlier run's rows (--resume or --overwrite), a masks or overlays
    folder linking out of it, a killed worker or a full disk; 75 when another run is writing
    into the output folder (try again later); 130 on Ctrl-C, SIGTERM or SIGHUP.

    What each reason in the reasons column means: ipp-seg reasons."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from .inference.backends import BackendError
    from .inference.batch import (DICOM_FOLDER, HIDDEN_LISTED_IN_RECORD, RUN_RECORD_NAME, BatchOptions,
                                  ExistingResultsError, InferenceOptions, LinkedOutputFolderError, NoScansError,
                                  OutputLockedError, RayEngineError, ResumeError, RowsFileReplacedError,
                                  WorkerDiedError, WorkingFolderGoneError, row_not_an_image, run_batch)
    from .inference.registry import ModelNotFoundError
    from .io.folders import not_a_folder

    _check_choices(method, orientation, frames, backend, device)
    if not in_dir.is_dir():
        # (One scan given to batch: predict measures it.)
        fail(not_a_folder(in_dir) + (f": batch measures a folder of scans; for one scan, ipp-seg predict "
                                     f"{shell_command([str(in_dir)])}" if in_dir.is_file() else ""))
    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, got {engine!r}")
    if address and engine != "ray":
        fail("--address only applies with --engine ray")
    if not glob or Path(glob).is_absolute():
        fail(f"--glob takes a pattern relative to {in_dir}, such as '**/*.dcm', got {glob!r}")
    for pattern in exclude or ():
        if not pattern.strip("/") or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            fail(f"--exclude takes a pattern relative to {in_dir}, such as 'viewer' or '**/*.pdf', got {pattern!r}")
    _output_folder(out)
    inference = InferenceOptions(model, backend, device, method, orientation, frames, _parse_spacing(spacing_mm), tta,
                                 threads)
    if resume and overwrite:
        fail("--resume goes on with the run in OUT, --overwrite replaces it: give one of them")
    if verify and not resume:
        fail("--verify checks the files of the run --resume goes on with: give it with --resume")
    if remeasure_other_versions and not resume:
        fail("--remeasure-other-versions measures again files of the run --resume goes on with: give it with "
             "--resume (--overwrite measures every file again)")
    options = BatchOptions(in_dir, out, inference, glob, save_masks, overlays, workers, resume, overwrite,
                           verify=verify, remeasure_other_versions=remeasure_other_versions, engine=engine,
                           address=address, dicom_seg=dicom_seg, dicom_sr=dicom_sr,
                           excluded_globs=tuple(exclude or ()), command=_command_line())
    counts = {"files": 0, "total": None, "frames": 0, "in_file": 0, "failed": 0, "not_images": 0,
              "started": time.monotonic(), "said": 0.0}
    # A job scheduler's stop (SIGTERM: kill, SLURM, docker stop), or the hang-up of the ssh session
    # a job was started from with '&', ends the run like Ctrl-C does, while it runs: one after it
    # (as the process exits) would only print a traceback.
    previous_signals = _stop_on_signals()
    # Transient: a refused run leaves no empty bar behind; the summary line says what was done.
    with Progress(TextColumn("[bold]files"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[frames]} frames, {task.fields[rate]:.1f}/s, {task.fields[failed]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
                  disable=not _live_progress()) as progress:  # (a log file gets lines of its own, below)
        task = progress.add_task("batch", total=None, frames=0, rate=0.0, failed=_failed_text(counts))

        def on_start(total: int) -> None:
            counts["total"] = total
            # Rates from here: a resume's reading of its rows and folder measures no frame (a scale pass: a
            # resume of 30,000 rows had said 131 s per frame, and 12.2/s where it measured 16).
            counts["measuring_since"] = time.monotonic()
            progress.reset(task, total=total, frames=0, rate=0.0, failed=_failed_text(counts))

        def show_frames(**fields) -> None:
            # The frames measured, those whose rows have not come yet included, and their rate (the bar
            # had read 0.0/s for a cine's first 11 s, a QA pass).
            measured = counts["frames"] + counts["in_file"]
            progress.update(task, frames=measured, rate=measured / (progress.tasks[0].elapsed or 1e-9), **fields)

        def on_frame() -> None:
            # A frame measured before its file's rows came (with several workers, of files after the next
            # one too): a long cine moves the count and the log's lines (a 600-frame cine had left a log
            # silent until it was done, a QA pass).
            counts["in_file"] += 1
            show_frames()
            # (The first line after the first file, as before, unless that file takes the first 30 s.)
            if counts["said"] or time.monotonic() - counts["started"] >= PLAIN_PROGRESS_EVERY_S:
                _say_progress_in_log(counts)

        def on_progress(outcome) -> None:
            counts["files"] += 1
            failure = _failure_line(outcome.file, outcome.rows)
            # Named as they come, the first few (-v logs every file anyway): a log or a job's mail had
            # said "3 failed" and no more; the CSV's status, reasons and error columns hold them all.
            if failure and not logging.getLogger().isEnabledFor(logging.INFO):
                counts["failures_named"] = named = counts.get("failures_named", 0) + 1
                if named <= FAILED_FILES_NAMED:
                    progress.console.print(f"[yellow]failed:[/] {escape(failure)}", highlight=False)
                elif named == FAILED_FILES_NAMED + 1:
                    progress.console.print(f"[yellow]failed:[/] further files not named here; the status, reasons "
                                           f"and error columns of {escape(str(csv_path))} hold every one",
                                           highlight=False)
            # (A file that could not be read has a row of its own, frame empty: no frame measured.)
            frames = sum(str(r.get("frame", "")) != "" for r in outcome.rows)
            counts["frames"] += frames
            # Its frames counted from its rows now; those of files still being measured stay.
            counts["in_file"] = max(0, counts["in_file"] - frames)
            # As the summary and the CSV's status column count them (objects without an image too).
            counts["failed"] += sum(r["status"] == "failed" for r in outcome.rows)
            counts["not_images"] += sum(map(row_not_an_image, outcome.rows))
            show_frames(advance=1, failed=_failed_text(counts))
            counts.setdefault("first", (time.monotonic(), counts["files"]))
            _say_progress_in_log(counts)

        csv_path = out / "measurements.csv"
        csv_before = _file_identity(csv_path)  # (to tell, if the run stops, whether it wrote any row)
        try:
            summary = run_batch(options, on_progress=on_progress, on_start=on_start, on_frame=on_frame)
        except OutputLockedError as exc:  # (EX_TEMPFAIL: a scheduler tries again later, where 2 says fix the command)
            fail(str(exc), code=75)
        except (ModelNotFoundError, BackendError, NotADirectoryError, ImportError, ResumeError, NoScansError,
                ExistingResultsError, LinkedOutputFolderError, WorkerDiedError, RayEngineError,
                WorkingFolderGoneError, RowsFileReplacedError) as exc:
            fail(str(exc))
        except OSError as exc:
            needs = ("permission to write there" if isinstance(exc, PermissionError) else
                     "room on the disk" if exc.errno == errno.ENOSPC else
                     "a file size limit, ulimit -f, high enough" if exc.errno == errno.EFBIG else
                     "the cause above put right")
            # The file refused, where it is one (a colleague's CSV in a shared folder, theirs alone: the
            # folder itself could be written, a QA pass), else the folder.
            what = ("it" if exc.filename and Path(exc.filename).is_file() and isinstance(exc, PermissionError)
                    else "the folder")
            _fail_writing(f"into {out}", exc, _batch_way_on(csv_path, csv_before, overwrite,
                                                            f"once {what} can be written ({needs}), "))
        except KeyboardInterrupt:
            fail(f"interrupted: {_batch_way_on(csv_path, csv_before, overwrite, '')}", code=130)
        finally:
            _restore_signals(previous_signals)
    # This run's rows and failures; files measured by the run it resumed are counted apart.
    earlier = f"; {_count(summary.skipped_files, 'file')} already done before" if summary.skipped_files else ""
    # Objects without an image (reports, PDFs, a DICOMDIR) are failed rows too, as the CSV's status
    # column counts them (a count apart had not added up to it), and said apart within them.
    failed, n_not = summary.failed_rows, summary.not_image_rows
    what = "not an image" if n_not == 1 else "not images"
    not_images = ("" if not n_not else f", {what}" if n_not == failed
                  else f", {n_not} of them {what}")
    measured_files = _count(summary.files - summary.skipped_files - summary.files_without_rows, "file")
    # Rows with a warning hold values to read with their reasons: a share worth knowing at a glance.
    # Most warnings on PNG frames are spacing_unknown alone: how many doubt the angle itself.
    doubtful = f" ({summary.doubtful_aop_rows or 'none'} with a doubtful AoP)"
    warned = ("" if not summary.warning_rows else f"1 with a warning{doubtful}, " if summary.warning_rows == 1
              else f"{summary.warning_rows} with warnings{doubtful}, ")
    err.print(f"{_count(summary.rows, 'row')} from {measured_files} measured now "
              f"({warned}{failed} failed{not_images}{earlier}) in {summary.seconds:.1f} s "
              f"-> {escape(str(summary.csv_path))}", highlight=False)
    _advise(summary.advice, orientation, again="--overwrite")
    _say_cine_frames_not_checked(summary.cine_frames_unchecked, summary.cine_frames_untimed)
    if verify:  # (an audit that found nothing had said nothing: an upgrade's pass)
        found = (f"{summary.verified_changed} of them changed since they were measured, measured again above"
                 if summary.verified_changed else "each holds the bytes its rows measured")
        err.print(f"--verify: {_count(summary.verified_files, 'file')} read again and compared with their rows' "
                  f"file_sha256: {found} (recorded in {RUN_RECORD_NAME})", highlight=False)
    if summary.hidden_left_out:  # (skipped as always: said, so that the rows can be reconciled with the folder)
        folders = [name for name in summary.hidden_left_out if name.endswith("/")]
        n_files = len(summary.hidden_left_out) - len(folders)
        counted = " and ".join(text for text in (
            f"{n_files} hidden or system file(s)" if n_files else "",
            f"{len(folders)} hidden folder(s) with all they hold" if folders else "") if text)
        shown = ", ".join(summary.hidden_left_out[:3]) + (", ..." if len(summary.hidden_left_out) > 3 else "")
        n_hidden = len(summary.hidden_left_out)
        listed = "" if n_hidden <= 3 else (
            f" (the run record, {RUN_RECORD_NAME}, lists them all)" if n_hidden <= HIDDEN_LISTED_IN_RECORD
            else f" (the run record, {RUN_RECORD_NAME}, lists the first {HIDDEN_LISTED_IN_RECORD:,})")
        err.print(f"left out {counted}: {escape(shown)}{listed}", highlight=False)
    if summary.folders_not_listed:  # (said when listed, among the first lines: said again where a log ends)
        shown = ", ".join(summary.folders_not_listed[:3]) + (", ..." if len(summary.folders_not_listed) > 3 else "")
        # Said under --quiet too: files with no row, a job's mail empty, and exit 0 had passed for a whole run.
        _say_anyway(f"[yellow]warning:[/] {len(summary.folders_not_listed)} folder(s) could not be listed, and the "
                    f"files in them have no rows: {escape(shown)} (the run record, {RUN_RECORD_NAME}, lists them); "
                    "once they can be listed, --resume measures them")
    if dicom_seg or dicom_sr:  # what goes to a PACS, counted: a refusal leaves its row as it is
        refused = (f"; {summary.dicom_refused} refused (the warnings above say why; their rows stand)"
                   if summary.dicom_refused else "")
        kinds = " and ".join(kind for kind, asked in (("SEG", dicom_seg), ("SR", dicom_sr)) if asked)
        err.print(f"{summary.dicom_written} DICOM {kinds} object(s) written under "
                  f"{escape(str(out / DICOM_FOLDER))}{refused}", highlight=False)
    if summary.repeated_images:
        files = sorted({(file, holder) for file, _, holder in summary.repeated_images})
        shown = "; ".join(f"{file} = {holder}" for file, holder in files[:3]) + (
            f"; and {len(files) - 3} more (the CSV's sop_instance_uid and file_sha256 columns tell them all)"
            if len(files) > 3 else "")
        rows = f"{len(summary.repeated_images)} rows are" if len(summary.repeated_images) > 1 else "1 row is"
        err.print(f"[yellow]warning:[/] {rows} of frames another file holds too "
                  f"(the same SOP Instance UID, or the same bytes: an image exported or copied twice), in "
                  f"{len(files)} file(s) that repeat another (file = the one it repeats): {escape(shown)}. "
                  "A statistic over the rows counts each such frame twice unless one of its rows is left out."
                  + (f" Each copy has its own SEG and SR under {DICOM_FOLDER}/: send one of them to a PACS."
                     if dicom_seg or dicom_sr else ""),
                  highlight=False)
    none_now = summary.rows and summary.failed_rows == summary.rows and not summary.skipped_files
    # ...nor in the whole CSV, resumed: a wrapper that resumes until the exit is 0 must not stop at
    # a resume that found nothing left to do in a run that measured nothing.
    none_at_all = summary.advice.measured == 0 and (summary.rows or summary.skipped_files)
    if none_now or none_at_all:
        where = f"in {summary.csv_path}" if summary.skipped_files else "of this run"
        fail(f"no frame {where} could be measured (see the error and reasons columns)", code=1)


def _file_identity(path: Path | int) -> tuple | None:
    """(device, inode, size, modification time) of a file (or a file descriptor), None where there is none."""
    try:
        st = os.stat(path)
    except OSError:  # none, or a path that cannot be used (a name too long, say)
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _batch_way_on(csv_path: Path, before: tuple | None, overwrite: bool, once: str) -> str:
    """What a batch run stopped early (a write error, Ctrl-C, SIGTERM) leaves, and how to go on:
    its rows so far and --resume; or, where it wrote none, the previous run's CSV kept as it was
    (an --overwrite stopped before its first row: --resume would go on with that older run) or
    no CSV at all."""
    now = _file_identity(csv_path)
    if now is None:
        return f"no row was written; {once}the same command starts the run again"
    if now == before:
        again = "the same command (with --overwrite) replaces them" if overwrite else "the same command goes on"
        return f"no row of this run was written, and the rows in {csv_path} are as they were; {once}{again}"
    resume = "--resume in place of --overwrite" if overwrite else "--resume"  # (the two are refused together)
    return f"the rows measured so far are in {csv_path}; {once}the same command with {resume} goes on from there"


def _device_name(provider: str) -> str:
    """Where the model runs, in words: "CPU (onnxruntime)" rather than "CPUExecutionProvider"."""
    named = {"CPUExecutionProvider": "CPU (onnxruntime)", "CUDAExecutionProvider": "CUDA GPU (onnxruntime)",
             "torch-cpu": "CPU (torch)", "torch-cuda": "CUDA GPU (torch)"}
    return named.get(provider, provider)


def _count(n: int, noun: str) -> str:
    """"1 row", "2 rows"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _say_what_reasons_ask(rows: list[dict], advice, orientation: str, overlays_written: bool = True) -> None:
    """Below a table of frames: what each reason in it asks the user to do, once each, in the order
    they first appear (the table gives codes; a clinician had found the advice only in
    ``ipp-seg reasons``). Not ``orientation_doubtful``'s where the run's ``advice`` (RunAdvice) says
    the frames look upside down, which mirroring does not right (the line after says so); for a
    run measured ``--orientation mirrored`` it names the other orientation, standard. Where advice
    asks to check an overlay that the run did not write (``overlays_written`` False: predict
    without --out), a line says how to write one."""
    from .measure.result import GIVEN_SPACING_IMPLAUSIBLE_ACTION, REASON_ACTIONS

    overridden = {"orientation_doubtful"} if advice.symphysis_mostly_unsure else set()
    codes = dict.fromkeys(code for row in rows for code in (row.get("reasons") or "").split(";")
                          if code in REASON_ACTIONS and code not in overridden)
    # For each row whose spacing is implausible, whether it was the user's --spacing-mm (else the file's own).
    given = [row.get("spacing_source") == "given" for row in rows
             if "spacing_implausible" in (row.get("reasons") or "").split(";")]
    if codes:
        err.print("what the reasons ask (ipp-seg reasons says what each means):", highlight=False)
        for code in codes:
            action = REASON_ACTIONS[code]
            if code == "spacing_implausible" and any(given):
                action = GIVEN_SPACING_IMPLAUSIBLE_ACTION + ("" if all(given) else f" (Other files: {action})")
            if orientation == "mirrored":  # (the advice is written for a run measured as standard)
                action = action.replace("The frame may be mirrored", "The frame may be displayed as standard").replace(
                    "--orientation mirrored", "--orientation standard")
            err.print(f"  {code}: {escape(action)}", highlight=False)
        if not overlays_written and any("overlay" in REASON_ACTIONS[code] for code in codes):
            # (A clinician's pass: "check the overlay" after a run that wrote none.)
            err.print("  (the overlays: predict --out DIR writes one per frame)", highlight=False)


def _say_cine_frames_not_checked(unchecked: int, untimed: int) -> None:
    """Say how many cine frames measured now had no check of their angle against the frames around
    them (aop_unsteady): a cine study's pass had frames picked from a loop read ok, nothing saying
    that their angle was never checked against the loop's."""
    if not (unchecked or untimed):
        return
    said = " and ".join(text for text in (
        f"{unchecked} without two other frames measured within 0.5 s of them (frames picked from a loop)"
        if unchecked else "", f"{untimed} of cines whose headers give no frame times" if untimed else "") if text)
    err.print(f"note: the angles of cine frames measured now, {said}, were not checked against the frames around "
              "them (aop_unsteady): measure whole loops (--frames all) of cines with frame times for that check",
              highlight=False)


def _advise(advice, orientation: str, again: str = "") -> None:
    """After a run's table or summary: what its rows say of the run as a whole (RunAdvice)."""
    if advice.orientation_looks_reversed:
        _say_orientation_looks_reversed(advice.doubtful_orientation, advice.measured, orientation, again)
    if advice.mostly_unrecognised:
        err.print(f"[yellow]warning:[/] {advice.unrecognised} of {advice.segmented} frames look like no transperineal "
                  "view the models know (reason anatomy_unrecognised): check that the right files were given; a "
                  "photograph, another modality or another view gives this, and so does a model of one's own that is "
                  "unsure of such frames (trained briefly, or on other machines' frames).", highlight=False)
    if advice.symphysis_mostly_unsure and advice.network:
        _say_symphysis_mostly_unsure(advice.unsure_symphysis, advice.segmented - advice.unrecognised,
                                     advice.unrecognised)
    elif advice.symphysis_mostly_unsure:
        err.print(f"[yellow]warning:[/] in {advice.unsure_symphysis} of {advice.segmented} masks the pubic symphysis "
                  "lies below the head's centre, or the angle passes 240° (reasons ps_below_head, aop_impossible): "
                  "check that the frames they were drawn on are displayed with the probe at the top of the image; "
                  "a frame turned by 180° or upside down gives this.", highlight=False)


def _say_symphysis_mostly_unsure(unsure: int, segmented: int, unrecognised: int = 0) -> None:
    # Of the frames it recognised: those failed anatomy_unrecognised are counted apart, and a
    # reader adding up the rows must see why the total is short.
    apart = (f" ({unrecognised} more frame(s), failed anatomy_unrecognised, are counted apart.)" if unrecognised
             else "")
    err.print(f"[yellow]warning:[/] in {unsure} of {segmented} frames the network is unsure of the pubic "
              "symphysis, finds none, or finds it where no transperineal view has it (reasons ps_low_confidence, "
              "ps_missing, ps_too_small, ps_below_head, aop_impossible). Check that these are transperineal views "
              "displayed with the probe at the top of the image: a frame turned by 180° or upside down gives this, "
              "and the models measure no other display." + apart, highlight=False)


def _say_orientation_looks_reversed(doubtful: int, measured: int, orientation: str, again: str = "") -> None:
    other = "mirrored" if orientation == "standard" else "standard"
    err.print(f"[yellow]warning:[/] {doubtful} of {measured} measured frames look displayed the other way round "
              f"(left-right) from --orientation {orientation} (reason orientation_doubtful). If this machine "
              f"displays them so, their AoP was taken at the wrong end of the symphysis: measure again with "
              f"--orientation {other}{' ' + again if again else ''}.", highlight=False)


PLAIN_PROGRESS_EVERY_S = 30.0


#: The commands that take Ctrl-C, SIGTERM and SIGHUP over while they run (:func:`_stop_on_signals`);
#: till then (reading options, loading the model) a stop ends them at once (:func:`_stopped`).
_COMMANDS_TAKING_STOPS = ("predict", "batch", "train")
#: Set by :func:`main` alone: the process ends with the command, so that a command stopped by a
#: signal keeps ending at once on the next one (:func:`_restore_signals`); a program that runs
#: commands within itself (tests, a notebook) gets its own handlers back.
_ENDS_WITH_THE_COMMAND: list[bool] = []


def _interrupt(signum, frame) -> None:
    """The first stop while a command runs: it ends as on Ctrl-C, saying how to go on. A stop after
    it, while the command stops, ends the process at once (:func:`_stopped_at_once`): a second
    Ctrl-C there had broken off the workers' stopping, and the process then hung as it exited."""
    _next_stop_at_once(_interrupt)
    raise KeyboardInterrupt


def _next_stop_at_once(first: Callable) -> None:
    """The stop signals handled by ``first`` (the handler a stop just ran) end the process at once
    from now on (:func:`_stopped_at_once`); one ignored on purpose stays so."""
    for each in _stop_signals():
        if signal.getsignal(each) is first:
            signal.signal(each, _stopped_at_once)


def _stopped_at_once(signum, frame) -> None:
    """A second stop while a command stops: its workers are killed and the process ends with 130,
    its outputs as a kill leaves them (each file written whole or not at all, the CSV's rows whole
    but perhaps the last, which a resume reads past)."""
    with suppress(OSError):
        os.write(2, f"ipp-seg: stopped at once ({signal.Signals(signum).name} again): what was written stays as a "
                    f"kill leaves it (batch: --resume goes on from it)\n".encode())
    processes = sys.modules.get("multiprocessing")
    if processes is not None:
        for child in processes.active_children():
            with suppress(Exception):
                child.kill()
        with suppress(Exception):
            # The run's shared locks and queues given back (as the interpreter's exit would), not
            # left to the resource tracker, which says it cleaned up "leaked semaphore objects".
            processes.util._run_finalizers(0)
    os._exit(130)


def _stop_on_signals() -> dict:
    """Ctrl-C, SIGTERM and (where there is one) SIGHUP raise KeyboardInterrupt while a long command
    runs, so that it ends as on Ctrl-C, saying how to go on (:func:`_interrupt`); returns the
    handlers they replace. A signal the process was started ignoring is left ignored: `nohup`
    ignores SIGHUP, and a shell's background job Ctrl-C, so that the job outlives the session (a
    nohup'd batch had stopped when its ssh session closed)."""
    return {signum: signal.signal(signum, _interrupt) for signum in _stop_signals()
            if signal.getsignal(signum) is not signal.SIG_IGN}


def _stop_by_an_exception() -> None:
    """A stop (Ctrl-C, SIGTERM, SIGHUP) in a command that does not take stops over (measure, evaluate,
    export...) once its options are read: said in a line, then raised as KeyboardInterrupt, so that
    the files it stages are removed on the way out, as an exit at once would not (a code review:
    evaluate had left a .part file on Ctrl-C; SIGTERM and SIGHUP had left it after that fix); exit 130.
    Only where :func:`main` set the start-up handlers (:func:`_stopped`): a program running commands
    within itself keeps its own."""
    for signum in _stop_signals():
        if signal.getsignal(signum) is _stopped:
            with suppress(ValueError):  # (not the main thread)
                signal.signal(signum, _said_and_interrupted)


def _said_and_interrupted(signum, frame) -> None:
    """The first stop in a command that does not take stops over (:func:`_stop_by_an_exception`):
    a line, then as :func:`_interrupt` (a second stop ends at once)."""
    with suppress(OSError):
        os.write(2, f"ipp-seg: stopped ({signal.Signals(signum).name})\n".encode())
    _next_stop_at_once(_said_and_interrupted)
    raise KeyboardInterrupt


def _restore_signals(previous: dict) -> None:
    # A command's end gives the system's handling back, not :func:`_stopped`: a stop that comes
    # once its output is whole is no interrupted run (0.2.11's 143, not 130 with a traceback).
    # But a command stopped by a signal keeps ending at once on the next (:func:`_stopped_at_once`):
    # predict, printing what it measured, had ended with 143 or a traceback on a second stop.
    for signum, handler in previous.items():
        if _ENDS_WITH_THE_COMMAND and signal.getsignal(signum) is _stopped_at_once:
            continue
        if handler is _stopped:
            handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, handler)


FAILED_FILES_NAMED = 10  # failed files a batch run names on stderr as they come; then a line says where the rest are


def _failure_line(file: str, rows: list[dict]) -> str | None:
    """A file's failed rows in one line (its name, the reasons, and the reader's error when there is
    one), or None when none failed. Files that hold no image (reports, PDFs) are counted apart by
    the summary, not named: an export has hundreds."""
    from collections import Counter

    from .inference.batch import row_not_an_image

    failed = [row for row in rows if row["status"] == "failed" and not row_not_an_image(row)]
    if not failed:
        return None
    reasons = Counter(row["reasons"].replace(";", ", ") or "no reason given" for row in failed)
    said = ", ".join(reason if n == 1 else f"{reason}: {n}" for reason, n in reasons.most_common())
    errors = {row["error"] for row in failed if row.get("error")}
    frames = f": {len(failed)} of {len(rows)} frames" if len(rows) > 1 else ""
    return f"{file}{frames} ({said})" + (f": {errors.pop()}" if len(errors) == 1 else "")


def _failed_text(counts: dict) -> str:
    """The failed rows so far, those of files without an image said apart within them: an
    export's reports, PDFs and viewer files had read as hundreds of failures in the counter,
    hiding the frames that failed."""
    failed, not_images = counts["failed"], counts.get("not_images", 0)
    return f"{failed} failed" + (f" ({not_images} not {'an image' if not_images == 1 else 'images'})"
                                  if not_images else "")


def _say_progress_in_log(counts: dict) -> None:
    """A log file (nohup, cron, a cluster job) gets a line of batch progress now and then instead of
    a bar."""
    now = time.monotonic()
    if not _live_progress() and now - counts["said"] >= PLAIN_PROGRESS_EVERY_S:
        counts["said"] = now
        err.print(_plain_progress(counts, now), highlight=False)


def _plain_progress(counts: dict, now: float) -> str:
    """One line of batch progress for a log file: files done of all, frames, rate, time left.
    The time left is estimated from the files done since the first one: before it, the
    workers were starting and loading the model (a 37 s run was once announced as 25 min)."""
    done, total, elapsed_s = counts["files"], counts["total"], now - counts["started"]
    frames = counts["frames"] + counts.get("in_file", 0)  # (those of the files in hand too)
    # (From when files began to be measured, not the resume's reading of its rows and folder.)
    measuring_s = now - counts.get("measuring_since", counts["started"])
    rate = frames / measuring_s if measuring_s > 0 else 0.0
    line = f"batch: {done} of {_count(total, 'file')}" if total else f"batch: {_count(done, 'file')}"
    # A slow model (the paper config with --tta) at its first frames: seconds per frame, not "0.0/s".
    pace = f"{1 / rate:.0f} s per frame" if 0 < rate < 0.1 else f"{rate:.1f}/s"
    line += f", {_count(frames, 'frame')} ({pace}), {_failed_text(counts)}, {elapsed_s / 60:.1f} min"
    first_at, first_files = counts.get("first") or (now, done)
    if total and done > first_files and now > first_at:
        line += f", about {(total - done) * (now - first_at) / (done - first_files) / 60:.1f} min left"
    return line


@app.command(cls=_Command, short_help="AoP and HSD from label masks you already have.")
def measure(
    masks: list[Path] = typer.Argument(..., metavar="MASK", help="Label masks (PNG/MHA/NIfTI).", readable=False),
    labels: str = typer.Option("ps=1,fh=2", "--labels", help=LABELS_HELP),
    scans: Optional[Path] = typer.Option(
        None, "--scans", help="Folder of the scans the masks were drawn on, named by the same case IDs: each "
                              "mask is measured with its scan's calibration (DICOM ultrasound regions)."),
    spacing_mm: Optional[str] = SPACING_OPT, method: str = METHOD_OPT, orientation: str = ORIENTATION_OPT,
    json_output: bool = _flag("--json", help="Print JSON on stdout (all else on stderr)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per mask (batch's columns); "
                                                                 "- for stdout."),
    overwrite: bool = _flag("--overwrite", help="Replace a --csv file that already holds rows."),
) -> None:
    """AoP and HSD from label masks you already have (manual annotations, another tool's output).
    Exit 0: all measured; 1: a measurement failed; 2: a mask unreadable or refused, or bad options;
    130: stopped (Ctrl-C, SIGTERM, SIGHUP).
    What each status reason means: ipp-seg reasons."""
    from .inference.batch import (RunAdvice, csv_target_content, has_other_names, is_batch_run_csv,
                                  measurements_csv_bytes, write_measurements_csv)
    from .inference.masks import index_scans, measure_masks

    _check_choices(method, orientation, "all", "onnx", "cpu")
    ps_label, fh_label = _parse_labels(labels)
    spacing = _parse_spacing(spacing_mm)
    csv_dash = csv_path is not None and str(csv_path) == "-"  # (as Unix tools take it: stdout, no file named -)
    if csv_dash and json_output:
        fail("--json and --csv - would both write to stdout: give one of them, or --csv a file")
    stdout_csv, csv_path = (True, None) if csv_dash else (False, csv_path)
    if csv_path is not None and os.path.isdir(csv_path):
        fail(f"--csv {csv_path} is a folder, not a file")
    held = csv_target_content(csv_path) if csv_path is not None and not overwrite else "none"
    if held == "rows":
        # Before the work: a --csv reused in a loop over folders, or a batch run's
        # measurements.csv, had been replaced without a word.
        fail(f"--csv {csv_path} already holds rows: give another file, or --overwrite to replace it")
    if held == "other":  # (a note or a one-line JSON had been written over without a word: a clinician's pass)
        fail(f"--csv {csv_path} holds something other than ipp-seg's measurements (it is no CSV that ipp-seg "
             "wrote): give another file, or --overwrite to replace it")
    if csv_path is not None and is_batch_run_csv(csv_path):
        # Even with --overwrite: rows of masks would replace a run's (or, while it ran, join them).
        fail(f"--csv {csv_path} is the measurements.csv of a batch run (its record is beside it): rows measured from "
             "masks would replace the run's; give another file")
    if csv_path is not None and overwrite and has_other_names(csv_path):
        # Written over in place, every name of the file changes: a hard link to a batch run's CSV had lost its rows.
        fail(f"--csv {csv_path} has other names (hard links), such as a batch run's measurements.csv may be: "
             "writing over it would change them all; give another file")
    # --csv /dev/stdout: the CSV is what stdout carries. The table after it had been written over
    # it (stdout a file: the CSV lost, exit 0) or mixed into it (a pipe).
    csv_on_stdout = stdout_csv or (csv_path is not None and _is_stdout(csv_path))
    if csv_on_stdout and json_output:
        fail(f"--json and --csv {csv_path} would both write to stdout: give one of them, or --csv a file")
    index = None
    if scans is not None:
        try:
            index = index_scans(scans)
        except (NotADirectoryError, ValueError) as exc:  # ValueError: a batch run's masks or overlays
            fail(f"--scans: {exc}")
        if not index.by_case:
            err.print(f"[yellow]warning:[/] no scans in {escape(str(scans))}: every mask is measured without "
                      "its scan's calibration", highlight=False)
    rows, reports, unusable, failed = [], [], False, False
    for measured in measure_masks(masks, (ps_label, fh_label), method=method, orientation=orientation,
                                  spacing_mm=spacing, scans=index):
        _say_messages(measured)
        unusable |= measured.unusable
        failed |= measured.measurement_failed
        rows.append(measured.row)
        reports.append(measured.report)
    if csv_path:
        try:
            write_measurements_csv(csv_path, rows)
        except OSError as exc:
            _fail_writing(f"--csv {csv_path}", exc)
    elif stdout_csv:  # (its bytes as a --csv file holds them, whatever stdout's encoding)
        _GUARDED["stdout"].write_bytes(measurements_csv_bytes(rows))
    if json_output:
        _print_json(reports)
    elif not csv_on_stdout:
        _print_table(_results_table(rows, "ipp-seg measure", network=False), turn=len(rows) <= 1)
    advice = RunAdvice.of_rows(rows, network=False)
    if not json_output and not csv_on_stdout:
        _say_what_reasons_ask(rows, advice, orientation)
    _advise(advice, orientation)
    raise typer.Exit(2 if unusable else 1 if failed else 0)


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is the file, pipe or terminal this process's stdout writes to
    (``/dev/stdout``, ``/proc/self/fd/1``, or the file stdout was redirected into)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file, or a stdout without a descriptor
        return False


@app.command(cls=_Command, short_help="Export a training checkpoint to ONNX.")
def export(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint written by `ipp-seg train` (.pt)."),
    onnx: Path = typer.Option(..., "--onnx", help="Where to write the ONNX model."),
    opset: int = typer.Option(17, "--opset",
                              help="ONNX opset, from 17 up to the highest that the installed torch's exporter "
                                   "writes (20 in torch 2.13); any other is refused, naming the bounds."),
    fp16_weights: bool = _flag("--fp16-weights",
                               help="Store the weights as float16: half the file (a paper config is about 60 MB "
                                    "instead of 118); the network still computes in float32."),
) -> None:
    """Export a training checkpoint to ONNX with the metadata inference needs."""
    try:
        from .nn.export import check_opset, export_checkpoint
        from .train.loop import check_checkpoint_path, load_checkpoint_model
    except ImportError as exc:
        fail(f"export needs torch and onnx: pip install -e '.[train]' in the ipp-seg clone ({exc})")
    try:
        check_opset(opset)
        check_checkpoint_path(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if onnx.is_dir():
        fail(f"--onnx {onnx} is a folder; give the file to write, e.g. {onnx / 'model.onnx'}")
    from .inference.registry import check_export_target

    try:
        check_export_target(onnx)
    except ValueError as exc:
        fail(str(exc))
    try:
        model, ckpt = load_checkpoint_model(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    try:
        export_checkpoint(model, ckpt, onnx, opset, fp16_weights=fp16_weights, source=checkpoint)
    except OSError as exc:
        _fail_writing(f"--onnx {onnx}", exc)
    err.print(f"wrote {escape(str(onnx))}", highlight=False)


@app.command(cls=_Command, short_help="Score predicted masks against ground truth, per case and per acquisition style.")
def evaluate(
    pred_dir: Path = typer.Argument(..., metavar="PRED_DIR",
                                    help="Predicted label masks (PNG/MHA/NIfTI), named by case ID.", readable=False),
    gt_dir: Path = typer.Argument(..., metavar="GT_DIR",
                                  help="Ground-truth label masks, same names (<case>_mask.png is <case>; a folder of "
                                       "<case>.png beside <case>_mask.png serves too).", readable=False),
    images: Optional[Path] = typer.Option(None, "--images",
                                          help="The frames (tells the acquisition style apart); may be GT_DIR when "
                                               "it holds them beside their masks."),
    method: str = METHOD_OPT, orientation: str = ORIENTATION_OPT,
    out: Optional[Path] = typer.Option(None, "--out", help="Write cases.csv and summary.json here."),
    reference_aop: Optional[Path] = typer.Option(
        None, "--reference-aop", help="CSV of published AoP per case (columns case,aop_deg, as PSFHS's "
                                      "aop_reference.csv): also report the predictions' |ΔAoP| against it."),
    missing_as_empty: bool = _flag("--missing-as-empty",
                                          help="Score a ground truth without prediction, or with one that cannot "
                                               "be used (unreadable, another size, other label values), as an "
                                               "empty prediction (Dice 0, HD = ASD = 100 px, AoP failed), as a "
                                               "challenge does; by default such cases are listed, not scored."),
    gt_labels: str = typer.Option("ps=1,fh=2", "--gt-labels",
                                  help="Label values of the structures in the ground-truth masks, e.g. "
                                       "ps=128,fh=255."),
    pred_labels: str = typer.Option("ps=1,fh=2", "--pred-labels",
                                    help="Label values of the structures in the predicted masks (ipp-seg writes "
                                         "1 and 2; another tool's may differ)."),
    spacing_mm: Optional[str] = typer.Option(
        None, "--spacing-mm", help="mm per pixel X[,Y] for ΔHSD in mm where neither the image (--images) nor the "
                                   "masks have a calibration; without it, that of the batch run that wrote "
                                   "PRED_DIR (its --spacing-mm)."),
) -> None:
    """Dice, Hausdorff and surface distances, ΔAoP, ΔHSD and the FH-PS-AOP 2023 score, per
    case, overall and per acquisition style. Exit 0: cases evaluated (cases that could not be
    are listed, and are rows of cases.csv); 2: no case could be evaluated (files written by an
    earlier run into --out are then left as they were), or unusable folders or options; 130:
    stopped (Ctrl-C, SIGTERM, SIGHUP)."""
    from dataclasses import replace

    from .evaluate import (MASK_SUFFIXES, ReferenceAopError, evaluate_folders, read_reference_aop,
                           write_evaluation)
    from .inference.registry import sha256_of
    from .io.folders import not_a_folder, printable_path

    _check_choices(method, orientation, "all", "onnx", "cpu")
    spacing = _parse_spacing(spacing_mm)
    for folder in (pred_dir, gt_dir, images):
        if folder is not None and not folder.is_dir():
            fail(not_a_folder(folder))
    _output_folder(out)
    if out is not None:  # before the work, not after it
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail_writing(f"into {out}", exc)
        _output_folder(out)
    reference = None
    if reference_aop is not None:
        try:
            reference = read_reference_aop(reference_aop)
        except ReferenceAopError as exc:
            fail(str(exc))
    try:
        report = evaluate_folders(pred_dir, gt_dir, images, method=method, orientation=orientation,
                                  reference_aop=reference, gt_labels=_parse_labels(gt_labels, "--gt-labels"),
                                  pred_labels=_parse_labels(pred_labels, "--pred-labels"),
                                  missing_as_empty=missing_as_empty, spacing_mm=spacing)
    except ValueError as exc:  # two files of one folder with the same case ID
        fail(str(exc))
    for folder, found in ((pred_dir, report.missing_ground_truth), (gt_dir, report.missing_predictions)):
        if not report.paired_cases and not found:  # this folder holds no mask at all
            from .inference.batch import is_batch_output

            # (Folders given the other way round: a run's masks are predictions, not read as a ground truth.)
            swapped = (f": {folder} is the output folder of a batch run, whose masks are predictions: give it first, "
                       "as PRED_DIR" if folder == gt_dir and is_batch_output(gt_dir) else "")
            fail(f"no label masks ({', '.join(MASK_SUFFIXES)}) found in {folder} or its sub-folders{swapped}")
    if not report.paired_cases:
        # A table of zeros (--missing-as-empty) would look like a result.
        examples = ", ".join(f"{a!r}" for a in (*report.missing_ground_truth[:1], *report.missing_predictions[:1]))
        fail(f"no prediction in {pred_dir} matches a ground-truth case ID in {gt_dir} ({examples}): name the masks "
             "by the same case IDs; --missing-as-empty scores only the cases a prediction is missing for")
    # (After the refusals of folders without masks or without a case in common: none of them was scored as empty.)
    _list_unevaluated(report, missing_as_empty)
    if not report.cases:  # before writing: an earlier run's files in --out stay as they were
        fail(f"none of the {report.paired_cases} case(s) in both folders could be evaluated (the reasons are "
             "listed above)")
    columns = ["block", "cases", "Dice PS", "Dice FH", "Dice all", "HD all (px)", "ASD all (px)", "mean |ΔAoP| (°)",
               "median |ΔAoP| (°)", "ΔAoP cases"]
    if reference is not None:
        columns += ["mean |ΔAoP| vs reference (°)", "median |ΔAoP| vs reference (°)"]
    table = _table(f"ipp-seg evaluate ({method})", (*columns, "failed", "score"), justify="right")
    table.caption = ("|ΔAoP|: over the cases measured from both masks (ΔAoP cases); failed: predicted masks whose "
                     "AoP could not be measured, charged 180° each in the score where the ground truth's AoP measures")
    for block in report.blocks:
        m = block.metrics
        vs_reference = ([_fmt(m["delta_aop_reference"].mean, 2), _fmt(m["delta_aop_reference"].median, 2)]
                        if reference is not None else [])
        table.add_row(block.name, str(block.n_cases), _fmt(m["dice_ps"].mean, 4), _fmt(m["dice_fh"].mean, 4),
                      _fmt(m["dice_all"].mean, 4), _fmt(m["hd_all"].mean, 2), _fmt(m["asd_all"].mean, 2),
                      _fmt(m["delta_aop"].mean, 2), _fmt(m["delta_aop"].median, 2), str(m["delta_aop"].n),
                      *vs_reference,
                      str(block.n_failed_pred), _fmt(block.score, 4))
    if reference_aop is not None:  # which reference file, by its bytes: two summaries against two told apart
        report = replace(report, inputs={**report.inputs, "reference_aop": {
            **(report.inputs.get("reference_aop") or {}), "file": printable_path(os.path.abspath(reference_aop)),
            "sha256": sha256_of(reference_aop)}})
    if out is not None:  # (made and checked before the work); written before the tables, which a reader may cut
        try:
            write_evaluation(report, out)
        except OSError as exc:
            _fail_writing(f"into {out}", exc)
    _print_table(table)
    for block in report.blocks:  # a "-" in the score column, explained where the table is read
        if block.score is None and block.score_reason:
            err.print(f"[yellow]no score for {escape(block.name)}:[/] {escape(block.score_reason)}", highlight=False)
    _print_table(_agreement_table(report.blocks, reference is not None))
    if any(block.reasons_pred for block in report.blocks):
        _print_table(_reasons_table(report.blocks))
    _say_prediction_models(report.prediction_models, report.prediction_settings)
    if len(report.prediction_versions) > 1:
        # (An upgrade's pass: summary.json listed them, the terminal did not.)
        # (Of the whole folder, as the models' warning: a QA pass had read it as of the cases scored.)
        err.print(f"[yellow]warning:[/] the predictions folder records {len(report.prediction_versions)} versions of "
                  f"ipp-seg ({escape(', '.join(report.prediction_versions))}), which may read frames differently: its "
                  "masks may mix them (CHANGELOG.md; batch --resume --remeasure-other-versions brings a run to one)",
                  highlight=False)
    if out is not None:
        err.print(f"wrote {escape(str(out / 'cases.csv'))} and {escape(str(out / 'summary.json'))}", highlight=False)


def _say_prediction_models(models, settings=()) -> None:
    """Which weights made the predictions, and with which settings (``--tta``), where their folder
    records it; a mix is a warning."""
    named = [f"{model} (sha256 {sha[:12]})" if sha else model for model, sha in models]
    tta = {t for t, *_ in settings if t}
    how = {frozenset({"true"}): " with --tta on", frozenset({"false"}): " with --tta off"}.get(frozenset(tta), "")
    if len(named) == 1:
        err.print(f"predictions made by {escape(named[0])}{how}", highlight=False)
    elif named:
        err.print(f"[yellow]warning:[/] the predictions folder records {len(named)} models: "
                  f"{escape(', '.join(named))}; its masks may mix their results", highlight=False)
    if len(settings) > 1:
        shown = "; ".join(", ".join(f"{k} {v}" for k, v in zip(("tta", "method", "orientation", "--spacing-mm"), s)
                                    if v) for s in settings)
        err.print(f"[yellow]warning:[/] the predictions were made with {len(settings)} settings ({escape(shown)}): "
                  "its masks may mix them (summary.json's prediction_settings)", highlight=False)


def _list_unevaluated(report, missing_as_empty: bool) -> None:
    """On stderr: the cases of either folder that were not evaluated, or were scored as empty
    predictions, with the reason."""
    from .io.folders import printable_path  # (here: ipp_seg.io pulls numpy into every --help)

    evaluated = {case.case_id for case in report.cases}
    scored = "scored as empty predictions" if missing_as_empty else "not scored (--missing-as-empty scores them)"
    # A ground truth that cannot be read is not scored either way: it is listed below instead.
    without = [c for c in report.missing_predictions if c in evaluated or not missing_as_empty]
    failed = [c for c, _ in report.failed_predictions]
    for label, ids in ((f"ground truths without prediction, {scored}", without),
                       ("ground truths whose frame the predicting run failed on (see its measurements.csv), "
                        "scored as empty predictions", failed),
                       ("predictions without ground truth", report.missing_ground_truth)):
        if ids:  # case IDs named as cases.csv names them (a Latin-1 byte as \xfc)
            shown = ", ".join(printable_path(i) for i in ids[:10])
            err.print(f"[yellow]{len(ids)} {label}:[/] {escape(shown)}{' ...' if len(ids) > 10 else ''}",
                      highlight=False)
    for case_id, problem in report.ground_truth_problems:
        err.print(f"[yellow]{escape(printable_path(case_id))} scored with {escape(problem)}:[/] check its expert mask",
                  highlight=False)
    for case_id, reason in report.unreadable:
        if case_id in evaluated:  # --missing-as-empty: its unusable prediction counted as empty
            err.print(f"[yellow]{escape(printable_path(case_id))} scored as an empty prediction:[/] {escape(reason)}",
                      highlight=False)
        else:
            err.print(f"[red]cannot evaluate {escape(printable_path(case_id))}:[/] {escape(reason)}", highlight=False)


def _agreement_table(blocks, with_reference: bool) -> Table:
    """Bland-Altman rows per block: AoP against the ground truth (and the reference), and HSD
    in mm where the masks have a spacing, in pixels otherwise."""
    table = _table("Agreement, prediction − ground truth (Bland–Altman)",
                   ("block", "measure", "cases", "bias", "95% limits of agreement", "proportional bias (slope)"),
                   justify="right")
    for block in blocks:
        hsd = ("hsd_mm", "HSD (mm)") if block.agreement.get("hsd_mm") else ("hsd_px", "HSD (px)")
        rows = [("aop", "AoP (°)"), *([("aop_reference", "AoP − reference (°)")] if with_reference else []), hsd]
        for key, name in rows:
            a = block.agreement.get(key)
            if a is None:
                table.add_row(block.name, name, "0", "-", "-", "-")
                continue
            limits = "-" if a.lower is None else f"{a.lower:+.2f} to {a.upper:+.2f}"
            slope = "-" if a.proportional_slope is None else f"{a.proportional_slope:+.3f}"
            table.add_row(block.name, name, str(a.n), f"{a.bias:+.2f}", limits, slope)
    return table


def _reasons_table(blocks) -> Table:
    """Per block, how many predicted measurements carry each reason code and how far their AoP
    is from the ground truth's: whether a warning marks the frames to check."""
    from .measure import REASONS

    table = _table("Reasons on the predicted measurements", ("block", "reason", "severity", "cases",
                                                              "mean |ΔAoP| (°)", "median |ΔAoP| (°)"),
                   justify="right")
    for block in blocks:
        for code, summary in block.reasons_pred.items():
            # (a frame the predicting run failed on carries the run's code: unreadable, ... - failed)
            table.add_row(block.name, code, REASONS.get(code, ("failed",))[0], str(summary.cases),
                          _fmt(summary.delta_aop.mean, 2), _fmt(summary.delta_aop.median, 2))
    return table


# What an option's value is, as the README writes it (``--out DIR``), in place of typer's type
# names (``<path>``, ``<int range> [x>=1]``), which read as jargon in a clinician's help.
_PLACEHOLDERS = {"--out": "DIR", "--scans": "DIR", "--images": "DIR", "--onnx": "FILE", "--csv": "FILE",
                 "--glob": "PATTERN", "--exclude": "PATTERN", "--spacing-mm": "X,Y", "--labels": "ps=A,fh=B",
                 "--gt-labels": "ps=A,fh=B",
                 "--pred-labels": "ps=A,fh=B", "--reference-aop": "CSV", "--init-from": "CHECKPOINT",
                 "--ce-weights": "BG,PS,FH", "--dice-weights": "PS,FH", "--extra-validation": "FIRST-LAST",
                 "--model": "NAME", "--config": "NAME", "--input-size": "PX", "--warmup-epochs": "EPOCHS"}


def _name_placeholders(typer_app: typer.Typer) -> None:
    """Give every option of ``typer_app``'s commands that takes a value a placeholder: from
    :data:`_PLACEHOLDERS`, else N for a whole number, X for a fraction, the option's own name
    in capitals for a word; flags none, as :func:`_flag` gives them."""
    for command in typer_app.registered_commands:
        for parameter in inspect.signature(command.callback).parameters.values():
            info = parameter.default
            if not isinstance(info, typer.models.OptionInfo) or info.metavar is not None:
                continue
            if isinstance(info.default, bool) or parameter.annotation in (bool, "bool", "Optional[bool]"):
                info.metavar = ""  # a flag, or a --x/--no-x pair: no value to name
                continue
            name = info.param_decls[0] if info.param_decls else f"--{parameter.name}"
            kind = str(parameter.annotation)
            info.metavar = _PLACEHOLDERS.get(name) or ("N" if "int" in kind else "X" if "float" in kind
                                                       else name.lstrip("-").upper().replace("-", "_"))


_name_placeholders(app)


def main() -> None:
    _ENDS_WITH_THE_COMMAND.append(True)
    _stop_as_on_ctrl_c_while_starting()
    _open_closed_standard_streams()
    _settle_output_environment()
    with _help_fitting_the_width():
        _refuse_empty_arguments(sys.argv[1:])
        stdout_before = _file_identity(1)
        try:
            try:
                code = app(standalone_mode=False)
            except click_errors.UsageError as exc:  # an option or argument typer refused
                _say_usage_error(exc)
                sys.exit(exc.exit_code)
            except click_errors.ClickException as exc:
                error(exc.format_message())
                sys.exit(exc.exit_code)
            except typer.Abort:  # end of input at a prompt (none is asked now)
                error("aborted")
                sys.exit(1)
            except SystemExit as done:
                # typer writes --help itself, through rich; when its reader stops early (`| head`)
                # rich points stdout at /dev/null and exits 1, where ipp-seg's own output keeps the
                # command's code (0 here), as the README promises.
                if done.code == 1 and _now_devnull(stdout_before, 1):
                    sys.exit(0)
                raise
            sys.exit(code if isinstance(code, int) else 0)
        except SystemExit as done:
            _exit_for_failed_writes(done.code)
            raise
        except MemoryError:  # (a ulimit -v: a traceback had ended the command, exit 1, which reads as a failed frame)
            error(OUT_OF_MEMORY_SAID)
            sys.exit(2)
        except OSError as exc:
            # typer's own output (--help, a usage error) bypasses the guarded streams; a command's
            # files are written and checked on their own, so a full disk or an I/O error that escapes
            # a command is its output's.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
                raise
            _GUARDED["stdout"].mark_failed(exc)
            error(f"cannot write its output: {exc.strerror or exc}")
            sys.exit(2)


@contextmanager
def _help_fitting_the_width() -> Iterator[None]:
    """typer's help in boxes below 84 columns cut option names ("--over…" for --overlays and
    --overwrite alike, a terminal user's pass): click's plain help there, which wraps the text
    and keeps them whole; in a file or a pipe, help in boxes of 84 columns rather than rich's 80
    (typer's TERMINAL_WIDTH, read when its help module is first imported: not at every start, for
    the 46 ms that import takes). typer's switch and the variable are set back after the command."""
    rich = getattr(typer.core, "HAS_RICH", None)
    width = _help_width()
    boxes_set = False
    if rich and width is not None and width < RICH_HELP_COLUMNS:
        typer.core.HAS_RICH = False
    elif rich and width is None and "TERMINAL_WIDTH" not in os.environ:
        os.environ["TERMINAL_WIDTH"] = str(RICH_HELP_COLUMNS)
        boxes_set = True
    try:
        yield
    finally:
        if rich is not None:
            typer.core.HAS_RICH = rich
        if boxes_set:
            os.environ.pop("TERMINAL_WIDTH", None)


def _now_devnull(before: tuple | None, fd: int) -> bool:
    """Whether ``fd`` was pointed at /dev/null since it was ``before`` (:func:`_file_identity`;
    a broken pipe's handler does that). Device and inode are compared: writing moves the rest."""
    now, null = _file_identity(fd), _file_identity(os.devnull)
    return now is not None and null is not None and now[:2] != (before or ())[:2] and now[:2] == null[:2]


def _say_usage_error(exc) -> None:
    """A refused option or argument, in two plain lines as ipp-seg's own errors read: the usage,
    and ``ipp-seg: <what is wrong>; ... --help lists the options``. typer's box around it had
    read as a different program's, and its ``{SCAN}`` as a literal."""
    ctx = exc.ctx
    if not exc.format_message().strip():  # no command given: its help is on stdout, a line says why the exit is 2
        _say_anyway(f"ipp-seg: no command given; {escape(ctx.command_path if ctx else 'ipp-seg')} --help lists the "
                    "commands", soft_wrap=True)
        return
    if ctx is not None:
        command = ctx.command_path
        if getattr(exc, "possibilities", None):  # "no such option": hidden ones not offered
            hidden = {name for param in ctx.command.params if getattr(param, "hidden", False) for name in param.opts}
            exc.possibilities = [name for name in exc.possibilities if name not in hidden]
        usage = re.sub(r"\{([A-Z_]+)\}", r"\1", ctx.get_usage())
        _say_anyway(_markup_escape(usage), soft_wrap=True)  # (click's own text, lines and all)
    else:  # refused before a command's context was made: named from the arguments
        commands = {c.name or c.callback.__name__ for c in app.registered_commands}
        command = "ipp-seg" + next((f" {arg}" for arg in sys.argv[1:] if arg in commands), "")
    message = exc.format_message()
    message = message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message
    # "--out --workers 1": --out took "--workers" for its folder, and "1" was left over.
    took = [(param.opts[0], value) for param in (ctx.command.params if ctx is not None else ())
            if param.opts and param.opts[0].startswith("--")
            for value in [(ctx.params or {}).get(param.name)] if str(value or "").startswith("--")]
    if took:
        message = message.rstrip(".") + "".join(f" ({option} took {str(value)!r} for its value: give {option} one)"
                                                for option, value in took)
    if message.startswith("got unexpected extra argument"):
        # (A clinician's pass: a folder named with a blank, or --glob *.png, which the shell had split or expanded.)
        message = message.rstrip(".") + " (a path holding blanks, or a --glob pattern such as '*.png', goes in quotes)"
    option = getattr(exc, "option_name", None)
    if option in ("-v", "--verbose", "-q", "--quiet") and ctx is not None and ctx.parent is not None:
        # (given after the command, as most tools take it: "no such option: -v" said nothing of where it goes)
        message = f"{option} is ipp-seg's own option: it goes before the command (ipp-seg {option} {ctx.info_name} ...)"
    # ("No such command 'evalute'. Did you mean 'evaluate'?": a question ends its sentence; commands are listed.)
    listed = "commands" if message.startswith("no such command") else "options"
    _say_anyway(f"ipp-seg: {escape(message.rstrip('.'))}{' ' if message.endswith('?') else '; '}{escape(command)} "
                f"--help lists the {listed}", soft_wrap=True)


def _open_closed_standard_streams() -> None:
    """Give a standard stream that a caller closed (``>&-``, ``2>&-``, as some daemonisers do)
    /dev/null, as if the caller had sent it there: Python leaves ``sys.stdout`` None, so that
    the first line printed raised, and a file opened later would take the free descriptor 1 or
    2 and receive what libraries write to stdout or stderr, a measurements CSV among them."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        devnull = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)  # the lowest free: fd itself
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))


def _exit_for_failed_writes(code) -> None:
    """Exit 2, with a line on stderr where it still takes one, when the command's stdout or
    stderr could not be written (a full disk, ``> /dev/full``): what it printed there is lost
    (the files it wrote are not: they are written and checked on their own). Where both
    streams were written, returns."""
    for guarded in _GUARDED.values():
        guarded.flush()  # what rich or typer left buffered fails here if it fails at all
    failed = [g for g in _GUARDED.values() if g.write_error is not None]
    if not failed:
        return
    for guarded in failed:
        if not _GUARDED["stderr"].write_error:
            error(f"cannot write to {guarded.name}: {guarded.write_error.strerror or guarded.write_error}: what the "
                  "command printed there is lost")
    sys.exit(2 if code in (0, 1, None) else code)


def _refuse_empty_arguments(argv: list[str]) -> None:
    """No argument of ipp-seg may be empty: typer reads ``""`` as the path ``.``, so a script's
    unset variable (``ipp-seg batch "$SCANS" ...``) had sent a batch through the whole current
    folder, and ``--spacing-mm ""`` had read as no spacing."""
    for position, arg in enumerate(argv):
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:  # --out="$OUT" with OUT unset
            error(f"{arg[:-1]} is given an empty value, perhaps an unset shell variable: give a value, or leave "
                  "the option out")
            sys.exit(2)
        if arg == "":
            where = f"after {argv[position - 1]}" if position else "first"
            error(f"argument {position + 1} ({where}) is empty, perhaps an unset shell variable: give a value, or "
                  "leave it out")
            sys.exit(2)  # before typer runs: no typer.Exit to raise


if __name__ == "__main__":
    main()
