"""`difffusr train sr|fusion ...`: the training commands of the two model families.

`train fusion` takes its flags from `FusionTrainConfig`'s fields (name, type, default, help from its
docstring), so a new config field is a new flag without retyping it here. Data folders and weights
(`--init`, `--sr-weights`, `--init-from`) are checked before Ray or any training starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.args import Parser, add_dataclass_flags, dataclass_from_args, default_of
from pipeline.errors import ConfigError, TrainingDataError

FAMILIES = ("sr", "fusion")


def cmd_train(argv: list[str]) -> int:
    """`difffusr train {sr,fusion} ...`: dispatch to the model family's command."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: difffusr train {sr,fusion} [options]   (`difffusr train sr --help` for the options)")
        return 0
    if argv[0] == "sr":
        return cmd_train_sr(argv[1:])
    if argv[0] == "fusion":
        return cmd_train_fusion(argv[1:])
    raise ConfigError(f"`difffusr train {argv[0]}`: unknown model family; use `train sr` or `train fusion`")


def _check_data_folders(folders: list[str], *, scenes: bool = False) -> None:
    """TrainingDataError unless every --data folder exists; with `scenes`, AssetError unless each holds a file
    named for every band (cheap: names only; the readers check the pixels)."""
    for d in folders:
        if not Path(d).is_dir():
            raise TrainingDataError(
                f"--data '{d}' does not exist or is not a folder; pass folders of training images"
            )
    if scenes:
        from pipeline.bands import S2_BANDS
        from pipeline.io.scene_files import find_band_file

        for d in folders:
            for band in S2_BANDS:
                find_band_file(Path(d), band)


# ----------------------------------------------------------------------------- train sr
def sr_parser() -> Parser:
    from pipeline.train.sr import SRTrainConfig

    p = Parser(prog="difffusr train sr", description="Train the blind diffusion SR model (DiffFuSR stage 1).")
    p.add_argument("--preset", default="small", help="network size: small (CPU) or paper (published size)")
    p.add_argument(
        "--data", nargs="+", required=True, help="folders of HR RGB GeoTIFFs and/or Sentinel-2 scenes"
    )
    p.add_argument("--workers", type=int, default=1, help="DDP ranks (Ray Train workers)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per rank (0 = CPU, gloo)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="torch threads per rank")
    p.add_argument(
        "--out", required=True, help="run folder (checkpoints, metrics.jsonl, loss_curve.png, final/)"
    )
    p.add_argument("--steps", type=int, default=4000, help="optimisation steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--batch-size",
        type=int,
        default=default_of(SRTrainConfig, "batch_size"),
        help="patches per rank per step",
    )
    p.add_argument(
        "--patch", type=int, default=default_of(SRTrainConfig, "patch"), help="HR patch side (pixels)"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: 1e-4 paper, 4e-4 small)"
    )
    p.add_argument(
        "--noise-max",
        type=float,
        default=None,
        help="max LR noise std-dev in reflectance (default: 25/255 paper, 5/255 small)",
    )
    p.add_argument(
        "--contrast-weight",
        type=float,
        default=default_of(SRTrainConfig, "contrast_weight"),
        help="lambda of the InfoNCE term",
    )
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics lines")
    p.add_argument("--seed", type=int, default=default_of(SRTrainConfig, "seed"))
    p.add_argument(
        "--init-from",
        default=None,
        help="start from these SR weights (fine-tuning); the network config is taken from them",
    )
    return p


def cmd_train_sr(argv: list[str]) -> int:
    """`difffusr train sr`: train on Ray Train DDP; prints where the final weights are."""
    from pipeline.config import check_seed
    from pipeline.models.checkpoint import SR_KIND, check_sr_weights, load_checkpoint
    from pipeline.models.diffusion.config import SRConfig, get_preset
    from pipeline.train.launch import LaunchConfig
    from pipeline.train.sr import SRTrainConfig, train_sr

    a = sr_parser().parse_args(argv)
    check_seed(a.seed)
    _check_data_folders(a.data)
    model = get_preset(a.preset)
    if a.init_from:
        check_sr_weights(a.init_from)
        model = SRConfig.from_json(load_checkpoint(a.init_from, kind=SR_KIND).config)
    small = model.preset == "small"
    cfg = SRTrainConfig(
        data=tuple(str(Path(d)) for d in a.data),
        model=model,
        batch_size=a.batch_size,
        patch=a.patch,
        lr=a.lr if a.lr is not None else (4e-4 if small else 1e-4),
        noise_max=a.noise_max if a.noise_max is not None else (5.0 / 255 if small else 25.0 / 255),
        contrast_weight=a.contrast_weight,
        seed=a.seed,
        init_from=a.init_from,
    )
    lc = LaunchConfig(
        run_dir=a.out,
        workers=a.workers,
        gpus_per_worker=a.gpus_per_worker,
        threads_per_worker=a.threads_per_worker,
        steps=a.steps,
        checkpoint_every=a.checkpoint_every,
        log_every=a.log_every,
        resume=a.resume,
    )
    res = train_sr(cfg, lc)
    print(f"trained {res.steps_done} steps in {res.wall_s:.0f} s; weights: {res.final_checkpoint}")
    return 0


# ----------------------------------------------------------------------------- train fusion
#: add_argument keywords that the config fields cannot say: required flags, metavars, shorter help.
_FUSION_FLAGS: dict[str, dict] = {
    "data": {
        "required": True,
        "metavar": "DIR",
        "help": "scene folders of per-band GeoTIFFs (*B01.tif ... *B12.tif)",
    },
    "out": {"required": True, "metavar": "RUN_DIR"},
    "init": {"metavar": "WEIGHTS"},
    "sr_guide": {"metavar": "CACHE_DIR"},
    "sr_weights": {"metavar": "DIR"},
    "holdout": {"metavar": "DIR"},
    "wald_x4": {
        "metavar": "GROUP",
        "choices": ["10m", "20m", "60m"],
        "help": "groups that also train on x4 pairs (inputs degraded by 4, output on the 10 m grid, loss on "
        "the output degraded to the group's native grid: fits 1.2 km patches, which the 60 m group's x24 "
        "pairs do not; docs/fusion.md)",
    },
}


def fusion_parser() -> tuple[Parser, list[str]]:
    """The `train fusion` parser and the FusionTrainConfig fields it sets."""
    from pipeline.train.fusion import FusionTrainConfig

    p = Parser(
        prog="difffusr train fusion",
        description="Wald-protocol training of the three fusion group networks on native Sentinel-2 scenes.",
    )
    fields = add_dataclass_flags(p, FusionTrainConfig, overrides=_FUSION_FLAGS)
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start a local one)")
    return p, fields


def fusion_config_from_args(args: argparse.Namespace, fields: list[str]):
    """The validated FusionTrainConfig of parsed `train fusion` flags (folders and weights checked too)."""
    from pipeline.config import check_seed
    from pipeline.models.checkpoint import check_fusion_weights, check_sr_weights
    from pipeline.train.fusion import FusionTrainConfig

    check_seed(args.seed)
    _check_data_folders(args.data, scenes=True)
    if args.init is not None:
        check_fusion_weights(args.init)
    if args.sr_weights is not None:
        check_sr_weights(args.sr_weights)
    return dataclass_from_args(FusionTrainConfig, args, fields)


def cmd_train_fusion(argv: list[str]) -> int:
    """`difffusr train fusion`: train on Ray Train DDP, then write RUN_DIR/weights."""
    from pipeline.train.fusion import train_fusion

    parser, fields = fusion_parser()
    a = parser.parse_args(argv)
    cfg = fusion_config_from_args(a, fields)
    weights, result = train_fusion(cfg, ray_address=a.ray_address)
    print(f"fusion weights: {weights} ({result.steps_done} steps, {result.wall_s:.0f} s)")
    return 0
