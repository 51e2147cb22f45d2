"""Cost of each network component at a stated tile size: median time, FLOPs, GFLOP/s, share of the matmul
ceiling.

Components (DiffFuSR): the RRDB context encoder and the degradation encoder (once per tile), one denoiser
(U-Net) step (x DDIM steps per tile), and the three fusion group networks (once per tile each), all built
from the `small` or `paper` preset with their real architecture (weights do not change the cost, so the
networks are freshly initialised). Each runs in fp32, and in bf16 autocast with channels_last tensors.

    python -m benchmarks.components --preset small --tile 64 --repeats 5 \
        --out benchmarks/results/components_small.json

`--tile` is the LR tile side in 10 m pixels (the output tile is 4x that at 2.5 m); FLOPs are counted with
torch.utils.flop_counter (convolutions and matmuls, 2 FLOPs per multiply-add); the ceiling is the best
GFLOP/s of a 2048^3 matmul in the same dtype on the same machine, measured in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import torch

from benchmarks.common import count_flops, machine, matmul_ceiling, median_time, write_json

DTYPES = ("fp32", "bf16_cl")


def build_components(
    preset: str, tile: int, *, generator: torch.Generator
) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """Each component as (module, its input tensors) at LR tile `tile` (output 4*tile), batch 1.

    Returns:
        name -> (module, args); calling module-method(*args) runs the component once. The denoiser entry
        wraps the U-Net call of one DDIM step.
    """
    from pipeline.models.diffusion import SRDiffusion, get_preset
    from pipeline.models.fusion import FusionModel, preset_configs

    sr = SRDiffusion(get_preset(preset)).eval()
    c = sr.config
    # the LR tile is padded to the U-Net's multiple, as super_resolve does
    t = -(-tile // c.pad_multiple) * c.pad_multiple
    lr = torch.rand(1, 3, t, t, generator=generator)
    with torch.no_grad():
        ctx = sr.encoder.encode(lr)
        v = sr.E.embed(lr)
    x_t = torch.randn(1, 3, 4 * t, 4 * t, generator=generator)
    level = torch.tensor([0.5])
    comps: dict[str, tuple[torch.nn.Module, tuple]] = {
        "rrdb_encoder": (_Call(sr.encoder, "encode"), (lr,)),
        "degradation_encoder": (_Call(sr.E, "embed"), (lr,)),
        "denoiser_step": (sr.model, (x_t, level, ctx, v)),
    }
    fusion = FusionModel(preset_configs(preset)).eval()
    hr = 4 * (tile // 6 * 6)  # fusion tiles need a 10 m side divisible by 6
    for name, net in fusion.nets.items():
        n_in = len(fusion.configs[name].input_bands)
        ms = torch.rand(1, n_in, hr, hr, generator=generator)
        guide = torch.rand(1, 3, hr, hr, generator=generator)
        comps[f"fusion_{name}"] = (net, (ms, guide))
    return comps


class _Call(torch.nn.Module):
    """A module whose forward is another module's named method (so it can be moved and autocast)."""

    def __init__(self, module: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.method)(*args)


def runner(module: torch.nn.Module, args: tuple, dtype: str, device: str) -> Callable[[], torch.Tensor]:
    """A no-grad closure running the component once in `dtype` ("fp32" or "bf16_cl") on `device`."""
    module = module.to(device)
    args = tuple(a.to(device) for a in args)
    if dtype == "bf16_cl":
        module = module.to(memory_format=torch.channels_last)
        args = tuple(a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args)
        autocast = lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    else:
        module = module.to(memory_format=torch.contiguous_format)
        args = tuple(a.contiguous() for a in args)
        autocast = contextlib.nullcontext

    def call() -> torch.Tensor:
        with torch.no_grad(), autocast():
            return module(*args)

    return call


def benchmark(
    preset: str,
    tile: int,
    *,
    repeats: int,
    dtypes: tuple[str, ...],
    device: str = "cpu",
    components: tuple[str, ...] | None = None,
    ceiling_n: int = 2048,
) -> dict:
    """Run the component benchmark; returns a JSON-able dict with one row per (component, dtype)."""
    try:
        return _benchmark(
            preset,
            tile,
            repeats=repeats,
            dtypes=dtypes,
            device=device,
            components=components,
            ceiling_n=ceiling_n,
        )
    finally:
        torch.set_flush_denormal(False)


def _benchmark(
    preset: str,
    tile: int,
    *,
    repeats: int,
    dtypes: tuple[str, ...],
    device: str,
    components: tuple[str, ...] | None,
    ceiling_n: int,
) -> dict:
    g = torch.Generator().manual_seed(0)
    comps = build_components(preset, tile, generator=g)
    # subnormal floats (tiny activations of freshly initialised nets) are very slow on x86: flush them
    flush = torch.set_flush_denormal(True)
    ceilings = {
        "fp32": matmul_ceiling(torch.float32, n=ceiling_n, device=device),
        "bf16_cl": matmul_ceiling(torch.bfloat16, n=ceiling_n, device=device),
    }
    rows = []
    for name, (module, args) in comps.items():
        if components and name not in components:
            continue
        flops = count_flops(runner(module, args, "fp32", device))
        for dtype in dtypes:
            t = median_time(runner(module, args, dtype, device), repeats=repeats, device=device)
            gflops = flops / t["median_s"] / 1e9
            rows.append(
                {
                    "component": name,
                    "dtype": dtype,
                    "input_shapes": [list(a.shape) for a in args],
                    "params": sum(p.numel() for p in module.parameters()),
                    "gflop": flops / 1e9,
                    **t,
                    "gflop_per_s": gflops,
                    "ceiling_gflop_per_s": ceilings[dtype],
                    "share_of_ceiling": gflops / ceilings[dtype],
                }
            )
    # the ceiling again after the components (take the best), so a busy moment at the start does not skew it
    ceilings = {
        "fp32": max(ceilings["fp32"], matmul_ceiling(torch.float32, n=ceiling_n, device=device)),
        "bf16_cl": max(ceilings["bf16_cl"], matmul_ceiling(torch.bfloat16, n=ceiling_n, device=device)),
    }
    for r in rows:
        r["ceiling_gflop_per_s"] = ceilings[r["dtype"]]
        r["share_of_ceiling"] = r["gflop_per_s"] / ceilings[r["dtype"]]
    return {
        "benchmark": "components",
        "preset": preset,
        "flush_denormal": flush,
        "lr_tile_10m_px": tile,
        "output_tile_2_5m_px": 4 * tile,
        "device": device,
        "ceilings_gflop_per_s": ceilings,
        "machine": machine(),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """A Markdown table of a component benchmark result."""
    lines = [
        (
            f"preset `{result['preset']}`, LR tile {result['lr_tile_10m_px']} px "
            f"(output {result['output_tile_2_5m_px']} px), "
            f"matmul ceiling fp32 {result['ceilings_gflop_per_s']['fp32']:.0f} / bf16 "
            f"{result['ceilings_gflop_per_s']['bf16_cl']:.0f} GFLOP/s"
        ),
        "",
        "| component | dtype | params | GFLOP | median s | GFLOP/s | share of ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['component']} | {r['dtype']} | {r['params'] / 1e6:.2f} M | {r['gflop']:.2f} | "
            f"{r['median_s']:.4f} | {r['gflop_per_s']:.1f} | {100 * r['share_of_ceiling']:.0f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.components", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small", choices=("small", "paper"))
    p.add_argument("--tile", type=int, default=64, help="LR tile side, 10 m px (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma list of fp32, bf16_cl")
    p.add_argument("--components", default=None, help="comma list to run only some components")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ceiling-n", type=int, default=2048, help="matmul size of the ceiling measurement")
    p.add_argument("--out", default=None, help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    comps = tuple(args.components.split(",")) if args.components else None
    res = benchmark(
        args.preset,
        args.tile,
        repeats=args.repeats,
        dtypes=tuple(args.dtypes.split(",")),
        device=args.device,
        components=comps,
        ceiling_n=args.ceiling_n,
    )
    write_json(args.out, res)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
