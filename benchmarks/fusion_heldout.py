"""Wald x4 fidelity of the learned fusion vs bicubic and Gram-Schmidt on held-out scenes.

Every band of each scene is degraded by 4 with the sensor model, super-resolved x4 by each method and
scored at its native resolution (pipeline.eval.protocol: PSNR, SSIM, SAM, ERGAS per group and overall).

Methods:
    bicubic            bicubic interpolation of every band
    gs[<guide>]        Gram-Schmidt (GSA) pansharpening with the guide below
    fusion[<guide>]    the three fusion networks with the guide below
  guides: "bicubic" = bicubic-upsampled degraded RGB (no extra information), "sr" = the diffusion SR of
  the degraded RGB (`pipeline.models.diffusion.load_sr_model`, when it exists). fusion[sr] is difffusr.
    fusion[mix<a>]     (--guide-mix a ...) a diagnostic, not a method: the guide is a x the native RGB (the
                       perfect SR) + (1 - a) x the SR guide (the bicubic one with --no-sr), to measure how the
                       fused scores depend on the guide's quality; the guide's own RGB PSNR is printed too.

    .venv/bin/python benchmarks/fusion_heldout.py --scenes data/samples/heldout/* \
        [--fusion-weights DIR] [--sr-weights DIR] [--sr-steps 20] [--json out.json]

Validation block of a training scene (model selection without the held-out scenes): `--row-frac A B`
scores only the rows [A H, B H) of each scene (rounded to 60 m rows), e.g. the Virginia rows that
`difffusr train fusion --holdout DIR --holdout-frac 0.2` leaves out of training:

    .venv/bin/python benchmarks/fusion_heldout.py --scenes /work/shared/data/s2/virginia_eastern_shore_l1c \
        --row-frac 0.8 1 --fusion-weights RUN/weights
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.eval.metrics import psnr
from pipeline.eval.protocol import WaldConfig, crop_for_ratio, wald_scene
from pipeline.io.scene_files import Scene
from pipeline.models import baselines
from pipeline.models.fusion import load_fusion_model, set_injection_gain, set_self_ensemble
from pipeline.models.fusion.config import ENSEMBLE_SIZES
from pipeline.models.fusion.gain import smooth_estimate
from pipeline.train.fusion import sr_weights_digest
from pipeline.train.scenes import read_any_scene


def _load_sr(weights: str | None):
    try:
        from pipeline.models.diffusion import load_sr_model
    except ImportError as exc:
        print(f"no SR guide: pipeline.models.diffusion.load_sr_model unavailable ({exc})", file=sys.stderr)
        return None
    from pipeline.errors import CheckpointError

    try:
        return load_sr_model(weights=weights, device="cpu")
    except CheckpointError as exc:
        print(f"no SR guide: {exc}", file=sys.stderr)
        return None


def make_superresolver(
    fusion,
    sr,
    sr_steps: int,
    sr_cache: str | None = None,
    sr_key: str = "",
    native: dict | None = None,
    guide_psnr: dict | None = None,
    guides: dict | None = None,
    gains: dict | None = None,
):
    """A `superresolve(b10, b20, b60, method, seed=...)` for pipeline.eval.protocol.wald_scene.

    `sr_cache`: a folder keeping each scene's SR guide (keyed by its input, steps, seed and `sr_key`, the
    SR weights' digest) across runs. `native["rgb"]`: the current scene's native (1, 3, H, W) RGB (set by
    `run_scenes`), which the `fusion[mix<a>]` diagnostic needs; `guide_psnr[method]` collects each guided
    method's guide PSNR against it when it is given. `guides`: further named guides, `name -> f(rgb_lr)`
    returning the (1, 3, 4h, 4w) guide, run as `fusion[name]` / `gs[name]`. `gains[method]` collects, per
    scene, the fusion's per-band injection gains when they are on.
    """
    cache: dict[str, torch.Tensor] = {}

    def superresolve(b10, b20, b60, method: str, *, seed: int = 0, **_):
        key = (b10.tobytes()[:64], b10.shape)
        if cache.get("key") != key:
            cache.clear()
            cache["key"] = key
            cache["t"] = tuple(torch.from_numpy(np.nan_to_num(x))[None] for x in (b10, b20, b60))
        t10, t20, t60 = cache["t"]
        if method == "bicubic":
            out = baselines.bicubic(t10, t20, t60)
        elif method == "bicubic+bp":  # the smooth answer the injection gain falls back to (no guide)
            ups = {
                g.name: smooth_estimate(t, 4 * g.factor_to_10m, 5)
                for g, t in zip(BAND_GROUPS, (t10, t20, t60), strict=True)
            }
            by_band = {b: ups[g.name][:, i] for g in BAND_GROUPS for i, b in enumerate(g.bands)}
            out = torch.stack([by_band[b] for b in S2_BANDS], 1)
        else:
            kind, gkey = method[:-1].split("[")
            mix = float(gkey[3:]) if gkey.startswith("mix") else None
            if guides and gkey in guides:
                gd = guides[gkey](baselines.rgb_of(t10))
            elif gkey == "bicubic" or (mix is not None and sr is None):
                gd = baselines.upsample(baselines.rgb_of(t10), 4)
            else:  # one SR draw per scene, shared by gs[sr], fusion[sr] and the mixes
                if "sr" not in cache:
                    rgb = baselines.rgb_of(t10)
                    digest = hashlib.sha256(
                        rgb.numpy().tobytes() + repr((sr_steps, seed, sr_key)).encode()
                    ).hexdigest()[:16]
                    path = Path(sr_cache) / f"sr_{digest}.pt" if sr_cache else None
                    if path is not None and path.is_file():
                        cache["sr"] = torch.load(path, weights_only=True)
                    else:
                        g = torch.Generator().manual_seed(seed)
                        cache["sr"] = sr.super_resolve(rgb, steps=sr_steps, generator=g).float()
                        if path is not None:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            torch.save(cache["sr"], path)
                gd = cache["sr"]
            if mix is not None:
                gd = mix * native["rgb"] + (1 - mix) * gd
            if guide_psnr is not None and native is not None:
                guide_psnr.setdefault(method, []).append(psnr(gd.numpy(), native["rgb"].numpy()))
            out = (
                baselines.gram_schmidt(t10, t20, t60, gd) if kind == "gs" else fusion.fuse(t10, t20, t60, gd)
            )
            gained = any(c.injection_gain for c in fusion.configs.values())
            if kind == "fusion" and gains is not None and gained:
                g = fusion.injection_gains(t10, t20, t60, gd)
                gains.setdefault(method, []).append({k: v[0].tolist() for k, v in g.items()})
        return out[0].numpy().astype(np.float32)

    return superresolve


def run_scenes(
    folders: list[str],
    methods: list[str],
    superresolve,
    native: dict,
    row_frac: tuple[float, float] | None = None,
) -> list:
    """Wald x4 of every method on each scene (rows `row_frac` only when given).

    Sets `native["rgb"]` per scene.
    """
    results = []
    for folder in folders:
        scene = read_any_scene(folder)
        if row_frac is not None:
            scene = cut_rows(scene, *row_frac)
        # the protocol crops the scene the same way (idempotent); the native RGB is the perfect guide
        scene = crop_for_ratio(scene, 4)
        native["rgb"] = baselines.rgb_of(torch.from_numpy(np.nan_to_num(scene.b10))[None])
        results.append(wald_scene(scene, methods, WaldConfig(ratio=4), superresolve=superresolve))
    return results


def cut_rows(scene: Scene, lo: float, hi: float) -> Scene:
    """The rows [lo H, hi H) of a scene (10 m rows, rounded inwards to whole 60 m pixels)."""
    h = scene.b10.shape[-2]
    r0, r1 = math.ceil(lo * h / 6) * 6, int(hi * h) // 6 * 6
    if r1 - r0 < 24:
        raise SystemExit(f"--row-frac {lo} {hi} leaves {max(0, r1 - r0)} rows of {scene.name} (need >= 24)")
    a, b, c, d, e, f = scene.transform
    return dataclasses.replace(
        scene,
        b10=scene.b10[:, r0:r1],
        b20=scene.b20[:, r0 // 2 : r1 // 2],
        b60=scene.b60[:, r0 // 6 : r1 // 6],
        transform=(a, b, c, d, e, f + r0 * e),
        name=f"{scene.name}[rows {r0}:{r1}]",
    )


def _fmt_gain(x) -> str:
    """One band's gain, or its (network, Gram-Schmidt) gains."""
    return f"{x:.2f}" if isinstance(x, float) else "/".join(f"{v:.2f}" for v in x)


def print_per_scene(results: list, methods: list[str]) -> None:
    """Per scene: group and 12-band ERGAS, 10 m PSNR and group SAM of each method, and the safety-net checks.

    A learned method's (scene, group) cell is starred when its ERGAS is above bicubic's; the check lines count
    those cells and the scenes whose 12-band ERGAS is above Gram-Schmidt's (`gs[bicubic]`).
    """
    print("\nPer scene (ERGAS per group and 12-band, 10m PSNR, SAM per group; * = ERGAS above bicubic):")
    print("| scene | method | 10m | 20m | 60m | 12-band | 10m PSNR | SAM 10m | SAM 20m | SAM 60m |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worse: dict[str, list[str]] = {m: [] for m in methods}
    for r in results:
        bic = r.methods["bicubic"].groups
        for m in methods:
            g = r.methods[m].groups
            cells = []
            for k in ("10m", "20m", "60m"):
                bad = m != "bicubic" and g[k]["ergas"] > bic[k]["ergas"]
                if bad:
                    worse[m].append(f"{r.scene} {k}")
                cells.append(f"{g[k]['ergas']:.3f}{'*' if bad else ''}")
            sams = " | ".join(f"{g[k]['sam_deg']:.3f}" for k in ("10m", "20m", "60m"))
            print(
                f"| {r.scene} | {m} | {' | '.join(cells)} | {g['all']['ergas']:.3f} "
                f"| {g['10m']['psnr']:.2f} | {sams} |"
            )
    gs = "gs[bicubic]"
    for m in methods:
        if m == "bicubic":
            continue
        above_gs = [
            r.scene
            for r in results
            if r.methods[m].groups["all"]["ergas"] > r.methods[gs].groups["all"]["ergas"]
        ]
        print(
            f"check {m}: {len(worse[m])} (scene, group) ERGAS above bicubic {worse[m]}; "
            f"{len(above_gs)} scene(s) 12-band ERGAS above {gs} {above_gs}"
        )


def cost_table(side10: int = 12) -> None:
    """GFLOP per output megapixel (all three groups) and CPU wall time per group set, per architecture.

    Architectures: the `paper` and `small` presets with the trunk on the full grid (stride 1) or on a 2x / 4x
    coarser grid. Random weights (cost does not depend on them); 1 thread.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.models.fusion import FusionModel, preset_configs

    g = torch.Generator().manual_seed(0)
    x = (
        torch.rand(1, 4, side10, side10, generator=g),
        torch.rand(1, 6, side10 // 2, side10 // 2, generator=g),
        torch.rand(1, 2, side10 // 6, side10 // 6, generator=g),
        torch.rand(1, 3, 4 * side10, 4 * side10, generator=g),
    )
    mpix = (4 * side10) ** 2 / 1e6
    print(
        f"| preset | trunk stride | params (3 nets) | GFLOP / output Mpx "
        f"| s per {4 * side10}x{4 * side10} output, 1 thread |"
    )
    print("|---|---|---|---|---|")
    for preset in ("paper", "small"):
        for stride in (1, 2, 4):
            model = FusionModel(preset_configs(preset, trunk_stride=stride)).eval()
            with FlopCounterMode(display=False) as fc:
                model.fuse(*x)
            t0 = time.perf_counter()
            model.fuse(*x)
            dt = time.perf_counter() - t0
            n = sum(p.numel() for p in model.parameters())
            print(
                f"| {preset} | {stride} | {n / 1e6:.2f} M "
                f"| {fc.get_total_flops() / 1e9 / mpix:.0f} | {dt:.2f} |"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", nargs="+", default=[])
    p.add_argument(
        "--cost", action="store_true", help="print the compute cost table of the architectures and exit"
    )
    p.add_argument("--fusion-weights", default=None)
    p.add_argument("--sr-weights", default=None)
    p.add_argument("--sr-steps", type=int, default=20)
    p.add_argument("--no-sr", action="store_true", help="skip the SR guide even when available")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--sr-cache",
        default=None,
        metavar="DIR",
        help="keep the SR guide of each scene here and reuse it (keyed by input, steps, seed and SR weights)",
    )
    p.add_argument(
        "--guide-mix",
        nargs="+",
        type=float,
        default=[],
        metavar="A",
        help="diagnostic: also run fusion[mixA], guided by A x native RGB + (1 - A) x the SR guide",
    )
    p.add_argument(
        "--row-frac",
        nargs=2,
        type=float,
        default=None,
        metavar=("A", "B"),
        help="score only rows [A H, B H) of each scene (a validation block of a training scene)",
    )
    p.add_argument(
        "--injection-gain",
        type=int,
        default=None,
        metavar="R",
        help="set the fusion's per-band injection gain to R (0 off, 2, 4; see models.fusion.gain), "
        "overriding the weights' config, for the groups of --gain-groups",
    )
    p.add_argument("--gain-groups", nargs="+", default=None, choices=["10m", "20m", "60m"])
    p.add_argument(
        "--gain-gs",
        nargs="+",
        default=None,
        choices=["10m", "20m", "60m"],
        help="with --injection-gain: these groups also fit the Gram-Schmidt detail",
    )
    p.add_argument(
        "--self-ensemble",
        type=int,
        default=None,
        choices=ENSEMBLE_SIZES,
        metavar="N",
        help="set the group nets' geometric self-ensemble to N (1 off, 2, 4, 8; see models.fusion.ensemble), "
        "overriding the weights' config, for the groups of --ensemble-groups",
    )
    p.add_argument("--ensemble-groups", nargs="+", default=None, choices=["10m", "20m", "60m"])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.cost:
        cost_table()
        return 0
    fusion = load_fusion_model(a.fusion_weights)
    if a.injection_gain is not None:
        set_injection_gain(fusion, a.injection_gain, tuple(a.gain_groups) if a.gain_groups else None)
        if a.gain_gs:
            set_injection_gain(fusion, a.injection_gain, tuple(a.gain_gs), gs=True)
    if a.self_ensemble is not None:
        set_self_ensemble(fusion, a.self_ensemble, tuple(a.ensemble_groups) if a.ensemble_groups else None)
    sr = None if a.no_sr else _load_sr(a.sr_weights)
    methods = ["bicubic", "bicubic+bp", "gs[bicubic]", "fusion[bicubic]"] + (
        ["gs[sr]", "fusion[sr]"] if sr is not None else []
    )
    methods += [f"fusion[mix{m:g}]" for m in a.guide_mix]
    native: dict[str, torch.Tensor] = {}
    guide_psnr: dict[str, list[float]] = {}
    gains: dict[str, list[dict]] = {}
    sres = make_superresolver(
        fusion,
        sr,
        a.sr_steps,
        a.sr_cache,
        sr_weights_digest(a.sr_weights),
        native=native,
        guide_psnr=guide_psnr,
        gains=gains,
    )
    t0 = time.time()
    results = run_scenes(a.scenes, methods, sres, native, a.row_frac)
    rows = {}
    for m in methods:
        agg: dict[str, dict[str, float]] = {}
        for grp in [g.name for g in BAND_GROUPS] + ["all"]:
            vals = [r.methods[m].groups[grp] for r in results]
            agg[grp] = {k: float(np.mean([v[k] for v in vals])) for k in ("psnr", "ssim", "sam_deg", "ergas")}
        rows[m] = agg
    print(
        f"Wald x4 on {len(results)} held-out scene(s): {', '.join(r.scene for r in results)}  "
        f"({time.time() - t0:.0f} s)"
    )
    print(
        "| method | 10m PSNR | 10m SSIM | 10m SAM | 10m ERGAS | 20m PSNR | 20m SSIM | 20m SAM | 20m ERGAS "
        "| 60m PSNR | 60m SSIM | 60m SAM | 60m ERGAS | all PSNR | all SSIM | all ERGAS (12 bands) |"
    )
    print("|---" * 17 + "|")
    for m, g in rows.items():
        cells = [
            f"{g[k]['psnr']:.2f} | {g[k]['ssim']:.4f} | {g[k]['sam_deg']:.3f} | {g[k]['ergas']:.3f}"
            for k in ("10m", "20m", "60m")
        ]
        print(
            f"| {m} | {' | '.join(cells)} | {g['all']['psnr']:.2f} | {g['all']['ssim']:.4f} "
            f"| {g['all']['ergas']:.3f} |"
        )
    print(
        "guide RGB PSNR vs the native RGB (dB): "
        + ", ".join(f"{m} {float(np.mean(v)):.2f}" for m, v in guide_psnr.items())
    )
    print_per_scene(results, methods)
    for m, per in gains.items():
        print(f"\ninjection gains of {m} per scene:")
        for r, g in zip(results, per, strict=True):
            cells = [f"{k} " + " ".join(_fmt_gain(x) for x in v) for k, v in g.items()]
            print(f"  {r.scene}: " + "; ".join(cells))
    per_scene = {r.scene: {m: r.methods[m].groups for m in methods} for r in results}
    per_band = {
        r.scene: {m: {b: r.methods[m].bands[b]["ergas"] for b in r.methods[m].bands} for m in methods}
        for r in results
    }
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "mean": rows,
                    "per_scene": per_scene,
                    "per_band_ergas": per_band,
                    "injection_gains": gains,
                    "guide_psnr": {m: float(np.mean(v)) for m, v in guide_psnr.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
