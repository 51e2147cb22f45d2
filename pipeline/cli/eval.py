"""`difffusr eval`: the Wald reduced-resolution protocol and the no-reference consistency check.

    difffusr eval wald SCENE_DIR... --methods difffusr,gs,bicubic [--ratio 4] [--steps N] [--precision bf16]
        --out REPORT_DIR
    difffusr eval consistency OUTPUT.tif --inputs SCENE_DIR --out REPORT_DIR
    difffusr eval sr-wald --scenes SCENE_DIR... [--weights DIR] [--steps 10 20] [--samples 1 4] [--json OUT]

`wald` and `consistency` write REPORT_DIR/report.md (tables), REPORT_DIR/figures/*.png and
REPORT_DIR/results.json. The report folder is created only once the inputs have been read, so a bad input
leaves nothing behind. `sr-wald` scores the diffusion SR alone on the RGB (pipeline.eval.sr_wald): one JSON
line per (steps, samples, low-frequency consistency) on stdout, and all of them in --json.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from pipeline.cli.args import Parser, add_learned_model_args, model_options_from_args
from pipeline.errors import ConfigError, OutputError


def eval_parser() -> Parser:
    p = Parser(prog="difffusr eval", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="protocol", required=True)
    w = sub.add_parser(
        "wald", help="reduced-resolution protocol: degrade, super-resolve, score against the originals"
    )
    w.add_argument(
        "scenes",
        nargs="+",
        metavar="SCENE_DIR",
        help="folders of band GeoTIFFs B01.tif ... B12.tif (native GSD)",
    )
    w.add_argument(
        "--methods", default="difffusr,gs,bicubic", help="comma-separated methods (default: %(default)s)"
    )
    w.add_argument(
        "--ratio", type=int, default=4, help="Wald degradation ratio, 2 or 4 (default: %(default)s)"
    )
    w.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (created)")
    w.add_argument(
        "--seed", type=int, default=0, help="base seed of the diffusion sampler (default: %(default)s)"
    )
    w.add_argument(
        "--crop",
        type=int,
        default=None,
        metavar="PX",
        help="evaluate only the central PX x PX of each scene's 10 m grid (large scenes on CPU)",
    )
    add_learned_model_args(w)
    w.add_argument(
        "--border",
        type=int,
        default=16,
        help="OpenSR border crop, 10 m-group HR pixels (default: %(default)s)",
    )
    c = sub.add_parser("consistency", help="no-reference check of an SR product against its own inputs")
    c.add_argument(
        "product", metavar="OUTPUT.tif", help="12-band SR GeoTIFF (e.g. from difffusr superres or run)"
    )
    c.add_argument(
        "--inputs", required=True, metavar="SCENE_DIR", help="the scene folder the product was made from"
    )
    c.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (created)")
    c.add_argument(
        "--border", type=int, default=16, help="OpenSR border crop, product pixels (default: %(default)s)"
    )
    s = sub.add_parser("sr-wald", help="Wald x4 fidelity of the diffusion SR alone (RGB), against bicubic")
    s.add_argument("--weights", default=None, help="SR checkpoint folder (default: shipped sr_small)")
    s.add_argument(
        "--scenes", nargs="+", required=True, metavar="SCENE_DIR", help="held-out Sentinel-2 scene folders"
    )
    s.add_argument("--steps", type=int, nargs="+", default=[20], help="DDIM steps (several: one row each)")
    s.add_argument(
        "--lowfreq",
        choices=["on", "off", "both", "default"],
        default="both",
        help="low-frequency consistency of the sampler; both: one row each (default: %(default)s)",
    )
    s.add_argument("--samples", type=int, nargs="+", default=[1], help="samples averaged per output (K)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: %(default)s)")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    s.add_argument("--json", default=None, metavar="OUT", help="write the results here")
    return p


def _check_out_dir(path: str) -> None:
    """OutputError unless REPORT_DIR is a folder or can be made (checked before the work, made after it)."""
    out = Path(path).absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(
            f"cannot create report folder {path!r}: '{existing}' is a file; choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot create report folder {path!r}: '{existing}' is not writable; choose another --out"
        )


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {path!r}: {exc}") from exc
    return out


def run_wald(args: argparse.Namespace, command: str) -> Path:
    """Run `eval wald` from parsed arguments; returns the report path."""
    from pipeline.config import METHODS, check_seed

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise ConfigError(f"--methods {args.methods!r}: {bad or 'empty'} not in {', '.join(METHODS)}")
    check_seed(args.seed)
    options = model_options_from_args(args)
    if "difffusr" in methods:
        from pipeline.models.precision import check_precision

        check_precision(options.precision, options.device.split(":")[0])  # fp16 on a CPU: before the reads
    _check_out_dir(args.out)

    from pipeline.eval.opensr import OpenSRConfig
    from pipeline.eval.protocol import WaldConfig, wald_scene
    from pipeline.eval.report import write_wald_report
    from pipeline.io.scene_files import read_scene

    cfg = WaldConfig(
        ratio=args.ratio, crop=args.crop, seed=args.seed, opensr=OpenSRConfig(border_px=args.border)
    )
    results = []
    for folder in args.scenes:
        scene = read_scene(folder)
        size = f"{scene.b10.shape[1]}x{scene.b10.shape[2]}"
        print(f"eval wald: {scene.name} {size} px, methods {', '.join(methods)}", file=sys.stderr)
        results.append(wald_scene(scene, methods, cfg, options=options))
    return write_wald_report(results, cfg, _out_dir(args.out), command=command)


def run_consistency(args: argparse.Namespace, command: str) -> Path:
    """Run `eval consistency` from parsed arguments; returns the report path."""
    _check_out_dir(args.out)

    from pipeline.eval.opensr import OpenSRConfig
    from pipeline.eval.protocol import consistency_check
    from pipeline.eval.report import write_consistency_report
    from pipeline.io.scene_files import match_product_to_scene, read_product, read_scene

    product = read_product(args.product)
    sr, scene = match_product_to_scene(product, read_scene(args.inputs))
    res = consistency_check(
        sr, scene, product=Path(args.product).name, cfg=OpenSRConfig(border_px=args.border)
    )
    return write_consistency_report(res, _out_dir(args.out), command=command)


def run_sr_wald(args: argparse.Namespace) -> None:
    """Run `eval sr-wald` from parsed arguments: one JSON line per row on stdout, all rows in --json."""
    import json

    from pipeline.config import MethodOptions, check_seed
    from pipeline.models.checkpoint import check_sr_weights

    for n in args.steps:
        MethodOptions(steps=n)  # the one --steps rule
    if min(args.samples) < 1:
        raise ConfigError(f"--samples {min(args.samples)} must be at least 1")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be at least 1")
    check_seed(args.seed)
    if args.weights is not None:
        check_sr_weights(args.weights)
    if args.json is not None and not Path(args.json).absolute().parent.is_dir():
        raise OutputError(f"--json {args.json!r}: its folder does not exist; create it or choose another")

    import torch

    from pipeline.eval.sr_wald import sweep
    from pipeline.models.diffusion.model import load_sr_model

    torch.set_num_threads(args.threads)
    results = []
    for row in sweep(
        load_sr_model(args.weights),
        args.scenes,
        steps=args.steps,
        samples=args.samples,
        lowfreq=args.lowfreq,
        seed=args.seed,
    ):
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def cmd_eval(argv: list[str]) -> int:
    """`difffusr eval wald|consistency|sr-wald ...`; user errors raise DiffFuSRError (one line, exit 2)."""
    args = eval_parser().parse_args(argv)
    if args.protocol == "sr-wald":
        run_sr_wald(args)
        return 0
    command = "difffusr eval " + " ".join(shlex.quote(a) for a in argv)
    path = run_wald(args, command) if args.protocol == "wald" else run_consistency(args, command)
    print(f"report: {path}")
    return 0
