"""`difffusr train sr|fusion ...`: dispatch to the model family's training command."""

from __future__ import annotations

import importlib

from pipeline.errors import ConfigError

TRAINERS = {"sr": "pipeline.train.sr", "fusion": "pipeline.train.fusion"}


def cli_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: difffusr train {sr,fusion} [options]   (`difffusr train sr --help` for the options)")
        return 0
    if argv[0] not in TRAINERS:
        raise ConfigError(f"`difffusr train {argv[0]}`: unknown model family; use `train sr` or `train fusion`")
    return int(importlib.import_module(TRAINERS[argv[0]]).cli_main(argv[1:]) or 0)
