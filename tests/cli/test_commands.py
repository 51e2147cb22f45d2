"""The `difffusr` commands through `pipeline.cli.main`: flags and defaults come from the config dataclasses,
and bad input to every entry point is one line `difffusr: error: ...` on stderr, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

from pipeline.cli import COMMANDS, main
from pipeline.cli.args import attribute_docs
from pipeline.cli.run import run_parser, superres_parser
from pipeline.cli.train import fusion_config_from_args, fusion_parser
from pipeline.config import ComputeConfig, MethodOptions, OutputConfig, TilingConfig
from pipeline.train.fusion import FusionTrainConfig

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO / "data" / "samples" / "catalog" / "S2A_MSIL2A_20170613T101031_87_48"
SR_WEIGHTS = REPO / "pipeline" / "weights" / "sr_small"
FUSION_WEIGHTS = REPO / "pipeline" / "weights" / "fusion_small"


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line with the one prefix; return that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("difffusr: error: ") and "Traceback" not in err[0]
    return err[0]


# ----------------------------------------------------------------------------- flags and defaults
def test_run_and_superres_defaults_are_the_config_defaults():
    for parser, extra in ((run_parser(), ["--out", "x"]), (superres_parser(), ["in", "out.tif"])):
        a = parser.parse_args(extra)
        assert (a.tile_size, a.halo) == (TilingConfig().core, TilingConfig().halo)
        assert a.steps == MethodOptions().steps and a.dtype == OutputConfig(out="x").dtype
    a = run_parser().parse_args(["--out", "x"])
    assert a.batch_tiles == ComputeConfig().batch_tiles and a.workers is None


def test_eval_wald_takes_the_learned_method_flags_of_run_with_their_defaults():
    from pipeline.cli.args import model_options_from_args
    from pipeline.cli.eval import eval_parser

    a = eval_parser().parse_args(["wald", str(SCENE), "--out", "x"])
    assert model_options_from_args(a) == MethodOptions()
    a = eval_parser().parse_args(["wald", str(SCENE), "--out", "x", "--precision", "bf16", "--steps", "4"])
    assert model_options_from_args(a) == MethodOptions(precision="bf16", steps=4)


def test_eval_wald_refuses_fp16_on_a_cpu_before_writing_a_report(capsys, tmp_path):
    out = tmp_path / "report"
    argv = ["eval", "wald", str(SCENE), "--methods", "difffusr", "--precision", "fp16", "--out", str(out)]
    assert "--precision fp16 needs a CUDA device" in _error(capsys, argv)
    assert not out.exists()


def test_train_fusion_has_one_flag_per_config_field_with_its_default_and_help():
    parser, names = fusion_parser()
    assert names == [f.name for f in dataclasses.fields(FusionTrainConfig)]
    a = parser.parse_args(["--data", str(SCENE), "--out", "run"])
    defaults = FusionTrainConfig(data=(str(SCENE),))
    for f in dataclasses.fields(FusionTrainConfig):
        if f.name not in ("data", "out"):
            value = getattr(a, f.name)
            assert (tuple(value) if isinstance(value, list) else value) == getattr(defaults, f.name), f.name
    text = parser.format_help()
    assert "--no-bf16" in text and "--sr-guide-prob" in text and "--trunk-stride" in text
    assert "probability that a crop uses an SR guide" in text  # help from the config's docstring


def test_train_fusion_flags_reach_the_config(tmp_path):
    parser, names = fusion_parser()
    a = parser.parse_args(
        [
            "--data",
            str(SCENE),
            "--out",
            str(tmp_path / "run"),
            "--groups",
            "10m",
            "20m",
            "--crop",
            "24",
            "--no-bf16",
            "--resume",
            "--sr-guide-prob",
            "0.5",
            "--trunk-stride",
            "1",
            "--init",
            str(FUSION_WEIGHTS),
            "--sr-weights",
            str(SR_WEIGHTS),
        ]
    )
    cfg = fusion_config_from_args(a, names)
    assert cfg.groups == ("10m", "20m") and cfg.crop == 24 and cfg.bf16 is False and cfg.resume is True
    assert cfg.sr_guide_prob == 0.5 and cfg.trunk_stride == 1 and cfg.init == str(FUSION_WEIGHTS)


def test_attribute_docs_reads_shared_and_continued_entries():
    class Doc:
        """Thing.

        Attributes:
            a: first
                continued.
            b / c: shared.
        """

    assert attribute_docs(Doc) == {"a": "first continued.", "b": "shared.", "c": "shared."}


def test_only_the_cli_package_parses_arguments():
    """One owner of argparse, `__main__` and the error prefix: pipeline/cli/."""
    offenders = set()
    for path in (REPO / "pipeline").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("pipeline/cli/"):
            continue
        text = path.read_text()
        if "import argparse" in text or 'if __name__ == "__main__"' in text or ": error:" in text:
            offenders.add(rel)
    assert not offenders, sorted(offenders)


def test_help_lists_every_command_and_unknown_commands_are_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert "unknown command 'rnu'" in _error(capsys, ["rnu"])
    line = _error(capsys, ["run", "--tile-size", "big", "--out", "x"])
    assert "argument --tile-size: invalid int value: 'big'" in line


# ----------------------------------------------------------------------------- bad input, every entry point
def test_superres_bad_options_and_output_folder_are_one_line(capsys, tmp_path):
    out = tmp_path / "sr.tif"
    assert "--tile-size 50 must be a positive multiple of 6" in _error(
        capsys, ["superres", str(SCENE), str(out), "--tile-size", "50"]
    )
    assert "--steps 0 must be between 1 and 1000" in _error(
        capsys, ["superres", str(SCENE), str(out), "--steps", "0"]
    )
    assert "--seed -3 must be between 0" in _error(capsys, ["superres", str(SCENE), str(out), "--seed", "-3"])
    line = _error(capsys, ["superres", str(SCENE), str(tmp_path / "no" / "sr.tif"), "--method", "bicubic"])
    assert re.search(r"output folder '.*no' does not exist", line)
    assert "does not exist" in _error(capsys, ["superres", str(tmp_path / "noscene"), str(out)])
    assert not out.exists()


def test_convert_checkpoint_bad_input_is_one_line(capsys, tmp_path):
    assert "does not exist" in _error(
        capsys, ["convert-checkpoint", str(tmp_path / "none.ckpt"), str(tmp_path / "o")]
    )
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    assert "not a PyTorch checkpoint" in _error(
        capsys, ["convert-checkpoint", str(junk), str(tmp_path / "o")]
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert "is an existing file" in _error(capsys, ["convert-checkpoint", str(junk), str(blocker)])
    assert not (tmp_path / "o").exists() and blocker.read_text() == "x"


def test_train_fusion_bad_data_and_wrong_weights_fail_before_ray(capsys, tmp_path):
    run = tmp_path / "run"
    base = ["train", "fusion", "--out", str(run)]
    assert "does not exist" in _error(capsys, [*base, "--data", str(tmp_path / "nowhere")])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("no bands here")
    assert "has no GeoTIFF for band B01" in _error(capsys, [*base, "--data", str(junk)])
    line = _error(capsys, [*base, "--data", str(SCENE), "--init", str(SR_WEIGHTS)])
    assert "holds a 'diffusion_sr' model, but a 'fusion_bundle' model was requested" in line
    assert "lacks model.safetensors" in _error(
        capsys, [*base, "--data", str(SCENE), "--sr-weights", str(FUSION_WEIGHTS)]
    )
    assert "--preset 'huge' is unknown" in _error(capsys, [*base, "--data", str(SCENE), "--preset", "huge"])
    assert "--crop 20 must be a multiple of 24" in _error(
        capsys, [*base, "--data", str(SCENE), "--crop", "20"]
    )
    assert not run.exists()


def test_train_sr_bad_data_and_wrong_weights_fail_before_ray(capsys, tmp_path):
    run = tmp_path / "run"
    base = ["train", "sr", "--out", str(run)]
    assert "does not exist" in _error(capsys, [*base, "--data", str(tmp_path / "nowhere")])
    line = _error(capsys, [*base, "--data", str(SCENE), "--init-from", str(FUSION_WEIGHTS)])
    assert "lacks model.safetensors" in line
    partial = tmp_path / "fusion_10m"
    shutil.copytree(FUSION_WEIGHTS / "10m", partial)
    line = _error(capsys, [*base, "--data", str(SCENE), "--init-from", str(partial)])
    assert "holds a 'fusion' model, but a 'diffusion_sr' model was requested" in line
    assert "unknown model family" in _error(capsys, ["train", "gan"])
    assert not run.exists()


def test_search_bad_options_fail_before_the_network(capsys):
    argv = [
        "search",
        "--stac-url",
        "http://127.0.0.1:9",
        "--bbox",
        "13.71,48.21,13.72,48.22",
        "--datetime",
        "2017-06-01/2017-06-02",
    ]
    assert "--tile-size 10 must be a positive multiple of 6" in _error(capsys, [*argv, "--tile-size", "10"])
    assert "--max-cloud 101.0 must be a percentage" in _error(capsys, [*argv, "--max-cloud", "101"])
    assert "--datetime START/END is required" in _error(capsys, argv[:-2])


def test_eval_sr_wald_bad_options_fail_before_the_model_loads(capsys, tmp_path):
    base = ["eval", "sr-wald", "--scenes", str(SCENE)]
    assert "--steps 0 must be between 1 and 1000" in _error(capsys, [*base, "--steps", "20", "0"])
    assert "--samples 0 must be at least 1" in _error(capsys, [*base, "--samples", "0"])
    assert "lacks model.safetensors" in _error(capsys, [*base, "--weights", str(FUSION_WEIGHTS)])
    out = tmp_path / "no" / "rows.json"
    assert "its folder does not exist" in _error(capsys, [*base, "--json", str(out)])
    assert "invalid choice: 'sometimes'" in _error(capsys, [*base, "--lowfreq", "sometimes"])
    no_rgb = ["eval", "sr-wald", "--scenes", str(tmp_path), "--steps", "1"]
    assert "no GeoTIFF for band B04" in _error(capsys, no_rgb)
    assert not out.parent.exists()


def test_eval_sr_wald_prints_one_json_row_per_setting_and_writes_them(capsys, tmp_path):
    rows = tmp_path / "rows.json"
    assert (
        main(
            [
                "eval",
                "sr-wald",
                "--scenes",
                str(SCENE),
                "--steps",
                "1",
                "--lowfreq",
                "both",
                "--json",
                str(rows),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["lowfreq_consistency"] for r in lines] == [False, True]
    assert json.loads(rows.read_text()) == lines
    assert lines[0]["steps"] == 1 and SCENE.name in lines[0]["scenes"]
    assert lines[0]["scenes"][SCENE.name]["bicubic_psnr"] > 0


def test_schedule_bad_input_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # this test is never a CronJob pod
    template = tmp_path / "rayjob.yaml"
    template.write_text("kind: RayJob\nmetadata:\n  name: prod-@WINDOW_ID@\n")
    base = ["schedule", "--template", str(template)]
    assert "--window 'weekly' is not 'month' or '<N>d'" in _error(capsys, [*base, "--window", "weekly"])
    assert "--today '2024-13-01' is not YYYY-MM-DD" in _error(capsys, [*base, "--today", "2024-13-01"])
    assert "cannot read --template" in _error(capsys, ["schedule", "--template", str(tmp_path / "none.yaml")])
    assert "not inside a Kubernetes pod" in _error(capsys, [*base, "--today", "2024-07-03"])
    template.write_text("kind: ConfigMap\n")
    assert "is not a RayJob manifest" in _error(capsys, [*base, "--dry-run"])


def test_io_that_keeps_failing_after_the_retries_is_one_line_and_exit_3(capsys, monkeypatch):
    """A store that still fails once its retries are spent (`IO_RETRY_ENV`) is not the user's input: one line
    naming it, exit 3, the hint that a rerun resumes; `--verbose` keeps the traceback."""
    import os

    import pytest

    import pipeline.cli.cluster as commands
    from pipeline.cluster.runtime import IO_RETRY_ENV

    def failing(argv):
        raise OSError(16, "Service Unavailable")

    monkeypatch.setattr(commands, "cmd_plan_status", failing)
    for key in IO_RETRY_ENV:
        monkeypatch.delenv(key, raising=False)
    assert main(["plan", "status", "s3://bucket/root"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(
        "difffusr: error: storage or network I/O failed after retries"
    )
    assert "Service Unavailable" in err and "rerun the same command" in err
    assert all(os.environ.get(k) == v for k, v in IO_RETRY_ENV.items())  # set for the stores and workers
    with pytest.raises(OSError):
        main(["--verbose", "plan", "status", "s3://bucket/root"])
