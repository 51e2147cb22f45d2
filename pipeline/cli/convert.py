"""`difffusr convert-checkpoint PATH.ckpt OUT_DIR`: the authors' Lightning checkpoints -> project format.

The conversion itself is `pipeline.models.convert.convert_checkpoint`; this module parses and reports.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.args import Parser
from pipeline.errors import OutputError


def convert_parser() -> Parser:
    p = Parser(
        prog="difffusr convert-checkpoint",
        description="Convert an authors' DiffFuSR Lightning checkpoint (SR or fusion)",
    )
    p.add_argument("ckpt", help="path of the .ckpt (Hugging Face NorskRegnesentralSTI/DiffFuSR)")
    p.add_argument("out_dir", help="folder to write model.safetensors + config.json + bands.json")
    return p


def cmd_convert(argv: list[str]) -> int:
    """`difffusr convert-checkpoint`: convert, then print the key report."""
    a = convert_parser().parse_args(argv)
    if Path(a.out_dir).exists() and not Path(a.out_dir).is_dir():
        raise OutputError(
            f"OUT_DIR '{a.out_dir}' is an existing file; pass a folder path (created if missing)"
        )

    from pipeline.models.convert import convert_checkpoint

    report = convert_checkpoint(a.ckpt, a.out_dir)
    for key in ("missing", "unexpected", "wrong_shape"):
        vals = report.get(key, [])
        print(f"{key}: {len(vals)}" + (f" {vals}" if vals else ""))
    if report.get("ignored_keys"):
        print(f"ignored: {len(report['ignored_keys'])} {report['ignored_keys'][:5]}")
    if report.get("variant"):
        print(f"fusion variant: {report['variant']}")
    if report.get("superseded"):
        print(
            f"superseded: {len(report['superseded'])} raw 'model.*' tensors (inference uses the 'ema.*' copy)"
        )
    if report.get("schedule_max_abs_diff"):
        worst = max(report["schedule_max_abs_diff"].values())
        print(f"schedule buffers max |diff| vs rebuilt cosine schedule: {worst:.3g}")
    print(f"wrote {a.out_dir} ({report.get('kind')})")
    return 0
