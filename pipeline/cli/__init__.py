"""The `difffusr` command line: the command table, the one error prefix and the one exit-code rule.

Every command's argparse lives in this package, one module per command group (`run`, `eval`, `train`,
`convert`, `cluster`), on the shared flags of `pipeline.cli.args`. Exit codes: 0 success; 2 a user error
(`DiffFuSRError` or a usage error), printed as one line `difffusr: error: ...` on stderr; 130 interrupted;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from pipeline import __version__
from pipeline.cli.args import ERROR_PREFIX, EXIT_IO_ERROR, EXIT_USER_ERROR, configure_logging
from pipeline.cluster.runtime import set_io_retry_defaults
from pipeline.errors import DiffFuSRError

__all__ = ["COMMANDS", "ERROR_PREFIX", "EXIT_USER_ERROR", "main"]

#: command -> (module of pipeline.cli, function(argv) -> exit code, one-line description).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "run",
        "cmd_run",
        "region + dates -> 12-band 2.5 m mosaic (Zarr, COG, quicklook, STAC item, manifest)",
    ),
    "search": ("run", "cmd_search", "what `run` would process, without processing it"),
    "superres": ("run", "cmd_superres", "one scene folder of band GeoTIFFs -> 12-band GeoTIFF at 4x"),
    "eval": ("eval", "cmd_eval", "Wald-protocol and consistency evaluation with a report"),
    "train": ("train", "cmd_train", "train the diffusion SR (`train sr`) or fusion (`train fusion`) models"),
    "convert-checkpoint": ("convert", "cmd_convert", "convert the authors' published checkpoints"),
    "submit": ("cluster", "cmd_submit", "send a run/train job to a Ray cluster"),
    "status": ("cluster", "cmd_status", "status of a submitted job"),
    "logs": ("cluster", "cmd_logs", "logs of a submitted job"),
    "plan": ("cluster", "cmd_plan", "split a large region into work units with cost estimates"),
    "schedule": ("cluster", "cmd_schedule", "create the RayJob of the last date window (CronJob)"),
}
_VERBOSE = ("--verbose", "-v")


def main(argv: list[str] | None = None) -> int:
    """Run `difffusr ARGV...`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in _VERBOSE
    if verbose:  # `difffusr --verbose COMMAND ...`; a command's own --verbose is read by its parser
        argv = argv[1:]
    configure_logging(verbose=verbose)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"difffusr {__version__}: Sentinel-2 all 12 bands to 2.5 m (DiffFuSR)\n\n"
            "usage: difffusr [--verbose] COMMAND ...\n"
        )
        for name, (_, _, doc) in COMMANDS.items():
            print(f"  {name:<20}{doc}")
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"{ERROR_PREFIX} unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    module, func, _ = COMMANDS[argv[0]]
    set_io_retry_defaults()  # before any store or GDAL is opened; workers inherit them with the env
    try:
        return int(getattr(importlib.import_module(f"pipeline.cli.{module}"), func)(argv[1:]) or 0)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    except DiffFuSRError as exc:
        print(f"{ERROR_PREFIX} {' '.join(str(exc).split())}", file=sys.stderr)  # one line, always
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("difffusr: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a store or network that keeps failing after the retries (IO_RETRY_ENV)
        if verbose:
            raise
        why = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"{ERROR_PREFIX} storage or network I/O failed after retries ({type(exc).__name__}: {why}); "
            "check the endpoint and credentials, then rerun the same command: finished work is kept "
            "(difffusr --verbose ... shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_IO_ERROR
