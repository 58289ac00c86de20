"""The ipp-seg command line. Thin: parses options, calls the library, renders with rich.

Nothing here imports torch at module level: ``--help``, ``models`` and inference run without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Segment the pubic symphysis and fetal head in intrapartum transperineal ultrasound "
                       "and measure the angle of progression (AoP) and head-symphysis distance (HSD).")
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an actionable error (never a traceback) and exit."""
    err.print(f"[bold red]ipp-seg:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ipp-seg {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def models() -> None:
    """List the network configs (parameters, MACs at 256x256)."""
    from .nn.configs import list_configs

    table = Table(title="Network configs")
    for col in ("config", "attention", "input ch", "params (M)", "GMACs @256", "notes"):
        table.add_column(col)
    for c in list_configs():
        table.add_row(c.name, c.attention, str(c.in_channels), f"{c.params / 1e6:.2f}", f"{c.macs_256 / 1e9:.2f}", c.notes)
    Console().print(table)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Folder in PSFHS layout (image_mha/, label_mha/) or of PNG image/mask pairs."),
    config: str = typer.Option("dssau-net-s", "--config", help="Network config (see `ipp-seg models`)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, split, history."),
    epochs: int = typer.Option(80, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    learning_rate: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    validation_count: int = typer.Option(200, "--validation-count", help="The last N case IDs are validation."),
    extra_validation: Optional[str] = typer.Option(None, "--extra-validation",
                                                   help="Another contiguous validation block, FIRST-LAST (IDs)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast on CPU (default: when native)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train a network on labelled frames (needs the [train] extra: torch)."""
    try:
        from .train.loop import TrainSettings, train as run_training
    except ImportError as exc:
        fail(f"training needs torch: pip install 'ipp-seg[train]' ({exc})")
    extra = None
    if extra_validation:
        parts = extra_validation.split("-")
        if len(parts) != 2:
            fail(f"--extra-validation must be FIRST-LAST, got {extra_validation!r}")
        extra = (parts[0], parts[1])
    settings = TrainSettings(config=config, data=str(data), out=str(out), epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, validation_count=validation_count,
                             extra_validation=extra, device=device, threads=threads, bf16=bf16)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("train", total=None, epoch="-", loss=float("nan"))

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            progress.update(task, total=steps, completed=step, epoch=f"{epoch}/{settings.epochs}", loss=loss)

        def on_epoch(r) -> None:
            progress.console.print(f"epoch {r.epoch}/{r.epochs}  loss {r.train_loss:.4f}  "
                                   f"val Dice PS {r.dice_ps:.4f} FH {r.dice_fh:.4f}  {r.seconds:.0f} s"
                                   + ("  [green]best[/]" if r.is_best else ""))

        try:
            result = run_training(settings, resume=resume, on_epoch=on_epoch, on_step=on_step)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            fail(str(exc))
    err.print(f"split: {result.split.describe()}")
    err.print(f"best epoch {result.best_epoch}: score {result.best_score:.4f}; checkpoints in {result.run_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
