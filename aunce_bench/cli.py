"""The `aunce-bench` command line: thin commands over the library.

User errors (bad options, unknown names, unwritable paths) print one line `error: ...` on stderr and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aunce_bench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark harness and leaderboard for facial action unit (AU) detection.")
console = Console()

# pydantic field -> the CLI option that sets it, for one-line validation errors.
_OPTION_OF_FIELD = {
    "profile": "--profile", "subjects": "--subjects", "sequences_per_subject": "--sequences",
    "frames_per_sequence": "--frames", "frame_stride": "--stride", "image_size": "--size", "seed": "--seed",
    "occurrence_threshold": "--threshold", "pose": "--pose", "difficulty": "--difficulty",
}


@contextmanager
def _user_errors():
    """Turn user errors into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        typer.echo(f"error: invalid {_OPTION_OF_FIELD.get(field, field)}: {message}", err=True)
        raise typer.Exit(2)


@app.callback()
def _main() -> None:
    """Benchmark harness and leaderboard for facial action unit (AU) detection."""
    import datasets

    datasets.disable_progress_bars()  # the CLI shows its own progress


@app.command()
def synth(
    profile: Annotated[str, typer.Option(help="SynthAU profile: bp4d or disfa")] = "bp4d",
    subjects: Annotated[Optional[int], typer.Option(help="subjects (default: the profile's, 41 or 27)")] = None,
    sequences: Annotated[Optional[int], typer.Option(help="sequences per subject (default: the profile's)")] = None,
    frames: Annotated[Optional[int], typer.Option(help="frames per sequence (default: the profile's)")] = None,
    stride: Annotated[int, typer.Option(help="render every n-th frame (labels evolve at the full rate)")] = 10,
    size: Annotated[int, typer.Option(help="image size in pixels (>= 32)")] = 112,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threshold: Annotated[float, typer.Option(help="occurrence = intensity >= threshold")] = 2.0,
    pose: Annotated[str, typer.Option(help="frontal (near-frontal jitter) or bins (15 yaw x pitch bins)")] = "frontal",
    difficulty: Annotated[float, typer.Option(help="divides the AU cue to nuisance ratio (1 = default)")] = 1.0,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: a cache folder keyed by the config)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="worker processes (default: all cores)")] = None,
    gallery: Annotated[Optional[Path], typer.Option(help="also write a gallery PNG here")] = None,
    gallery_only: Annotated[bool, typer.Option(help="write the gallery without generating the dataset")] = False,
) -> None:
    """Generate a SynthAU dataset (a FrameIndex on disk) and optionally a gallery PNG."""
    from aunce_bench.data.synth.generate import SynthConfig, check_writable, load_or_generate

    with _user_errors():
        config = SynthConfig(profile=profile, subjects=subjects, sequences_per_subject=sequences,
                             frames_per_sequence=frames, frame_stride=stride, image_size=size, seed=seed,
                             occurrence_threshold=threshold, pose=pose, difficulty=difficulty).resolved()
        if workers is not None and workers < 1:
            raise UserError("invalid --workers: must be at least 1")
        if gallery_only and gallery is None:
            raise UserError("--gallery-only needs --gallery PATH")
        if gallery is not None:
            check_writable(gallery.parent)
        if not gallery_only:
            started = time.perf_counter()
            with Progress(TextColumn("rendering subjects"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("subjects", total=config.subjects)
                index, folder, reused = load_or_generate(
                    config, out, workers, progress=lambda done, total: bar.update(task, completed=done))
            _print_summary(index, folder, reused, time.perf_counter() - started)
        if gallery is not None:
            from aunce_bench.data.synth.gallery import write_gallery

            console.print(f"gallery: {write_gallery(config, gallery)}")


def _print_summary(index, folder: Path, reused: bool, seconds: float) -> None:
    labels = index.label_matrix()
    table = Table(title=f"{index.name} base rates", show_header=True)
    table.add_column("AU")
    table.add_column("base rate", justify="right")
    for column, au in enumerate(index.aus):
        known = labels[:, column] >= 0
        table.add_row(f"AU{au}", f"{labels[known, column].mean():.3f}")
    console.print(table)
    subjects = len(set(index.frames["subject"]))
    if reused:
        console.print(f"already generated, reused: {folder}")
    else:
        console.print(f"wrote {len(index)} frames of {subjects} subjects to {folder} "
                      f"in {seconds:.1f} s ({len(index) / seconds:.0f} faces/s)")
