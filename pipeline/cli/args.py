"""Shared pieces of every `difffusr` command parser: the parser class, flag builders and their readers.

Defaults are read from the config dataclasses (`pipeline.config`, `pipeline.catalog.query`), never
retyped, and `add_dataclass_flags` derives a command's flags from a config dataclass's fields (name,
type, default, and help from the class docstring's `Attributes:` section).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import types
import typing
from typing import Any

EXIT_USER_ERROR = 2
#: Storage or network I/O that kept failing after the retries: not the user's input; a rerun resumes.
EXIT_IO_ERROR = 3
#: The one prefix of every user-error line.
ERROR_PREFIX = "difffusr: error:"
_NEGATIVE_LIST = re.compile(r"^-\d[\d.,\s-]*$")
#: Flags whose value may start with "-" (a negative longitude): "--bbox -8.1,52.3,-8.0,52.4".
_NEGATIVE_VALUE_FLAGS = ("--bbox",)


def configure_logging(*, verbose: bool = False) -> None:
    """WARNING and up (or $DIFFFUSR_LOG) on stderr; INFO with --verbose (e.g. a short line per STAC retry)."""
    logging.basicConfig(
        level=os.environ.get("DIFFFUSR_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    if verbose:
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's rules: usage errors are one line with the one prefix and exit code 2, every
    (sub)command takes `--verbose`, and a negative-number list may follow `--bbox`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand's own --verbose must not reset the one given before it.
        self.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            default=argparse.SUPPRESS,
            help="more log lines (INFO), e.g. each retry of a STAC request",
        )

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{ERROR_PREFIX} {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        args = list(args or [])
        for i in range(len(args) - 1):
            if args[i] in _NEGATIVE_VALUE_FLAGS and _NEGATIVE_LIST.match(args[i + 1]):
                args[i : i + 2] = [f"{args[i]}={args[i + 1]}", ""]
        ns = super().parse_args([a for a in args if a != ""], namespace)
        if getattr(ns, "verbose", False):
            configure_logging(verbose=True)
        return ns


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass field `name` of `cls` (its factory's value for a default_factory)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


# ----------------------------------------------------------------------------- search (run, search)
def add_search_args(p: argparse.ArgumentParser) -> None:
    """--stac-url, --collection, --bbox | --aoi, --datetime, --max-cloud, --mgrs-tiles, --max-items."""
    from pipeline.catalog.query import CatalogOptions

    p.add_argument(
        "--stac-url",
        default=default_of(CatalogOptions, "stac_url"),
        help="STAC API root URL (default: Earth Search v1)",
    )
    p.add_argument(
        "--collection",
        default=default_of(CatalogOptions, "collection"),
        help="collection id (default: %(default)s)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bbox", help="W,S,E,N in degrees (EPSG:4326)")
    where.add_argument("--aoi", help="GeoJSON file with the area of interest (its bounding box is used)")
    p.add_argument("--datetime", help="START/END, e.g. 2023-06-01/2023-06-30 (required)")
    p.add_argument(
        "--max-cloud",
        type=float,
        default=default_of(CatalogOptions, "max_cloud"),
        help="maximum eo:cloud_cover of an item, percent",
    )
    p.add_argument("--mgrs-tiles", default=None, help="only these MGRS tiles, e.g. 32TNT,32TMT")
    p.add_argument(
        "--max-items",
        type=int,
        default=default_of(CatalogOptions, "max_items"),
        help="upper bound on items fetched (default %(default)s)",
    )


def catalog_from_args(args: argparse.Namespace):
    """The validated `CatalogOptions` of the search flags (no area or dates)."""
    from pipeline.catalog.query import resolve_catalog

    return resolve_catalog(
        stac_url=args.stac_url,
        collection=args.collection,
        max_cloud=args.max_cloud,
        mgrs_tiles=args.mgrs_tiles,
        max_items=args.max_items,
    )


def query_from_args(args: argparse.Namespace):
    """The validated `SearchQuery` of the search flags; ConfigError names the bad flag."""
    from pipeline.catalog.query import resolve_query
    from pipeline.errors import ConfigError

    if not args.datetime:
        raise ConfigError("--datetime START/END is required, e.g. --datetime 2023-06-01/2023-06-30")
    return resolve_query(
        stac_url=args.stac_url,
        collection=args.collection,
        bbox=args.bbox,
        aoi=args.aoi,
        datetime_range=args.datetime,
        max_cloud=args.max_cloud,
        mgrs_tiles=args.mgrs_tiles,
        max_items=args.max_items,
    )


# ------------------------------------------------------------------------ tiling and model (run, superres)
def add_tiling_args(p: argparse.ArgumentParser) -> None:
    """--tile-size, --halo (defaults: `TilingConfig`)."""
    from pipeline.config import TilingConfig

    p.add_argument(
        "--tile-size",
        type=int,
        default=default_of(TilingConfig, "core"),
        help="tile core, 10 m pixels, multiple of 6 (default %(default)s)",
    )
    p.add_argument(
        "--halo",
        type=int,
        default=default_of(TilingConfig, "halo"),
        help="tile overlap margin, 10 m pixels, multiple of 6 (default %(default)s)",
    )


def add_grid_arg(p: argparse.ArgumentParser) -> None:
    """--grid, for the commands whose jobs lie on a map grid (run, search)."""
    from pipeline.tiling.grid import GRID_ANCHORS

    p.add_argument(
        "--grid",
        choices=GRID_ANCHORS,
        default=None,
        help="where tiles lie: 'aoi' (from the AOI's corner; the default of a single job) or 'zone' (the "
        "zone's fixed tile lattice, the default of --plan: bit-identical with every other job in the CRS "
        "where they overlap, at the cost of the lattice tiles around the AOI)",
    )


def tiling_from_args(args: argparse.Namespace, *, default_grid: str = "aoi"):
    from pipeline.config import TilingConfig

    grid = getattr(args, "grid", None) or default_grid
    return TilingConfig(core=args.tile_size, halo=args.halo, grid=grid)


def add_learned_model_args(p: argparse.ArgumentParser) -> None:
    """The flags of the learned method: --steps, --precision, --self-ensemble, --sr-weights, --fusion-weights
    (one source for `run`, `superres` and `eval wald`)."""
    from pipeline.config import ENSEMBLE_SIZES, PRECISIONS, MethodOptions

    p.add_argument(
        "--steps",
        type=int,
        default=default_of(MethodOptions, "steps"),
        help="DDIM sampling steps of the diffusion SR (default: the SR weights' default_steps)",
    )
    p.add_argument(
        "--precision",
        default=default_of(MethodOptions, "precision"),
        choices=PRECISIONS,
        help="compute precision of the networks: auto = bf16 where the device has native bfloat16 (CUDA, "
        "CPUs with avx512_bf16/AMX), else fp32; bf16 = bfloat16 autocast + channels_last; fp16 = CUDA only "
        "(default %(default)s)",
    )
    p.add_argument(
        "--self-ensemble",
        type=int,
        default=default_of(MethodOptions, "self_ensemble"),
        choices=ENSEMBLE_SIZES,
        metavar="N",
        help="average each fusion net over N flips/turns of its inputs (1, 2, 4, 8): slightly lower error, "
        "the fusion nets' cost times N (default: the fusion weights' setting)",
    )
    p.add_argument(
        "--sr-weights", default=None, help="diffusion SR checkpoint folder (default: shipped small model)"
    )
    p.add_argument(
        "--fusion-weights", default=None, help="fusion checkpoint folder (default: shipped small model)"
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model flags (--method, the learned method's flags, --seed), --dtype and the tiling flags."""
    from pipeline.config import DEFAULT_METHOD, DTYPES, METHODS, JobConfig, MethodOptions, OutputConfig

    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=METHODS,
        help="difffusr = diffusion SR + fusion (learned); gs, bicubic = baselines (default %(default)s)",
    )
    add_learned_model_args(p)
    p.add_argument(
        "--uncertainty",
        type=int,
        default=default_of(MethodOptions, "uncertainty"),
        metavar="K",
        help="K >= 2 seeded draws of the diffusion SR per tile (difffusr only): the product is their mean "
        "and the per-pixel spread (std over K) of the 12 fused bands is written as "
        "uncertainty.tif; cost ~K x (default: off)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=default_of(JobConfig, "seed"),
        help="seed of the sampler's noise (outputs reproduce exactly)",
    )
    p.add_argument(
        "--dtype",
        default=default_of(OutputConfig, "dtype"),
        choices=DTYPES,
        help="stored values of the COG and the Zarr mosaic: uint16 reflectance x 10000 (nodata 0; xarray "
        "decodes the Zarr to reflectance), or float32 reflectance (nodata NaN)",
    )
    add_tiling_args(p)


def check_weights(options) -> None:
    """CheckpointError unless the `MethodOptions`' weights folders hold weights of the right kind.

    Cheap (JSON files and the safetensors header), on this machine, before any search, ingest or Ray actor:
    the same messages the loaders give.
    """
    from pipeline.models.checkpoint import check_fusion_weights, check_sr_weights

    if options.sr_weights is not None:
        check_sr_weights(options.sr_weights)
    if options.fusion_weights is not None:
        check_fusion_weights(options.fusion_weights)


def model_options_from_args(args: argparse.Namespace):
    """The validated `MethodOptions` of the model flags, weights checked."""
    from pipeline.config import MethodOptions

    options = MethodOptions(
        sr_weights=args.sr_weights,
        fusion_weights=args.fusion_weights,
        steps=args.steps,
        precision=args.precision,
        self_ensemble=args.self_ensemble,
        uncertainty=getattr(args, "uncertainty", default_of(MethodOptions, "uncertainty")),
    )
    check_weights(options)
    return options


# ----------------------------------------------------------------------------- flags from a config dataclass
def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> text of the `Attributes:` section of a Google-style class docstring.

    "a / b: text" and "a, b: text" document several fields at once; indented lines continue the entry.
    """
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    names: list[str] = []
    indent = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        lead = len(line) - len(line.lstrip())
        m = re.match(r"^([A-Za-z_][\w]*(?:\s*[/,]\s*[A-Za-z_][\w]*)*):\s*(.*)$", stripped)
        if m and (indent is None or lead <= indent):
            indent = lead
            names = re.split(r"\s*[/,]\s*", m.group(1))
            for n in names:
                docs[n] = m.group(2)
        elif names and indent is not None and lead > indent:
            for n in names:
                docs[n] += " " + stripped
    return docs


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """(element type, is a sequence) of a field's type hint: `int | None` -> (int, False),
    `tuple[str, ...]` -> (str, True)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def add_dataclass_flags(
    p: argparse.ArgumentParser, cls: type, *, overrides: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Add one flag per field of the dataclass `cls`: `--field-name`, typed and defaulted like the field.

    Booleans become `--name` (default False) or `--no-name` (default True); tuples take one or more values.
    `overrides[field]` adds or replaces add_argument keywords (e.g. required, metavar).

    Returns:
        The field names, for `dataclass_from_args`.
    """
    overrides = overrides or {}
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    names = []
    for f in dataclasses.fields(cls):
        names.append(f.name)
        flag = "--" + f.name.replace("_", "-")
        default = default_of(cls, f.name)
        kind, many = _flag_type(hints[f.name])
        help_text = docs.get(f.name, "").rstrip(".")
        kw: dict[str, Any] = {"dest": f.name}
        extra = overrides.get(f.name, {})
        if kind is bool:
            if default:
                flag = "--no-" + f.name.replace("_", "-")
                help_text = f"turn off: {help_text}"
            kw.update(action="store_false" if default else "store_true", default=default)
        else:
            kw.update(type=kind, default=list(default) if many else default)
            if many:
                kw["nargs"] = "+"
            if default not in (None, (), []) and not extra.get("required"):
                help_text += f" (default: {' '.join(map(str, default)) if many else default})"
        kw["help"] = help_text.replace("%", "%%")
        kw.update(extra)
        p.add_argument(flag, **kw)
    return names


def dataclass_from_args(cls: type, args: argparse.Namespace, names: list[str]):
    """Build `cls` from the flags `add_dataclass_flags` added (sequences become tuples)."""
    values = {n: getattr(args, n) for n in names}
    return cls(**{n: tuple(v) if isinstance(v, list) else v for n, v in values.items()})
