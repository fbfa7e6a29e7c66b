"""The `masksynth` command: parse options, call one stage, turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from masksynth import __version__
from masksynth.config import PrepareConfig
from masksynth.errors import MasksynthError

app = typer.Typer(
    help="Mask / no-mask face classifiers and anonymized synthetic faces from a small photo set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("masksynth")
INTERRUPTED = 130  # the shell convention for Ctrl-C


def _version(value: bool) -> None:
    if value:
        typer.echo(f"masksynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="masksynth: %(message)s", stream=sys.stderr, force=True)


def _int_triple(text: str, option: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise MasksynthError(f"{option} must be three integers 0-255 like 255,255,255")
    return values  # type: ignore[return-value]


@app.command()
def prepare(
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="ImageFolder: one subfolder per class (optionally inside train/ val/ test/)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (PREP_DIR).")],
    positive_class: Annotated[
        str, typer.Option(help="Class counted as positive for sensitivity.")
    ] = PrepareConfig.positive_class,
    size: Annotated[
        list[int] | None,
        typer.Option("--size", metavar="PX", help="Cached square size in px; repeat for several."),
    ] = None,
    split: Annotated[str, typer.Option(help="train,val,test fractions.")] = ",".join(
        map(str, PrepareConfig.split)
    ),
    seed: Annotated[int, typer.Option(help="Seed of the split and the contact sheets.")] = 0,
    group_by: Annotated[
        str | None,
        typer.Option(
            help="Regex on file names; files sharing its first group stay in one split "
            r"(e.g. a person: '^\d+_\d+_([A-Za-z]+)_')."
        ),
    ] = None,
    face_crop: Annotated[bool, typer.Option(help="Crop the most confident face (YuNet).")] = True,
    face_margin: Annotated[
        float, typer.Option(help="Margin around the face box per side, as a share of its size.")
    ] = PrepareConfig.face_margin,
    face_threshold: Annotated[
        float, typer.Option(help="YuNet detection score threshold.")
    ] = PrepareConfig.face_threshold,
    near_dup_bits: Annotated[
        int, typer.Option(help="pHash bits within which two images are near duplicates.")
    ] = PrepareConfig.near_dup_bits,
    min_side: Annotated[
        int, typer.Option(help="Reject images whose shorter side is smaller (px).")
    ] = PrepareConfig.min_side,
    max_pixels: Annotated[
        int, typer.Option(help="Reject images with more pixels (decompression bombs).")
    ] = PrepareConfig.max_pixels,
    alpha_background: Annotated[
        str, typer.Option(help="RGB that transparent pixels become.")
    ] = ",".join(map(str, PrepareConfig.alpha_background)),
    workers: Annotated[int, typer.Option(help="Processes; 0 = one per CPU core.")] = 0,
) -> None:
    """Validate, deduplicate, face-crop and split a raw photo folder into a cached data set."""
    from masksynth.data.prepare import prepare as run_prepare
    from masksynth.data.split import parse_fractions

    config = PrepareConfig(
        positive_class=positive_class,
        sizes=tuple(sorted(set(size or PrepareConfig.sizes))),
        split=parse_fractions(split),
        seed=seed,
        group_by=group_by,
        face_crop=face_crop,
        face_margin=face_margin,
        face_threshold=face_threshold,
        near_dup_bits=near_dup_bits,
        min_side=min_side,
        max_pixels=max_pixels,
        alpha_background=_int_triple(alpha_background, "--alpha-background"),
        workers=workers,
    )
    meta = run_prepare(data_dir, out, config)
    counts = meta["counts"]
    usable = ", ".join(f"{c} {counts['usable'].get(c, 0)}" for c in meta["classes"])
    log.info("usable images: %s; report: %s", usable, out / "report.md")
    problems = sum(n for key, n in counts["status"].items() if not key.endswith("/ok"))
    if problems:
        log.warning(
            "%d file(s) rejected, duplicated or skipped: listed in %s", problems, out / "report.md"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="masksynth", standalone_mode=False)
    except MasksynthError as error:
        print(f"masksynth: error: {error}", file=sys.stderr)
        return 2
    except TyperException as error:  # bad option or argument: click-style usage errors
        ctx = getattr(error, "ctx", None)
        command_name = ctx.command_path if ctx is not None else "masksynth"
        print(
            f"masksynth: error: {error.format_message()} (see '{command_name} --help')",
            file=sys.stderr,
        )
        return 2
    except (KeyboardInterrupt, typer.Abort):
        result = INTERRUPTED
    if result == INTERRUPTED:  # typer turns Ctrl-C into this exit code, silently
        print("masksynth: interrupted; run the same command again to resume", file=sys.stderr)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
