"""Every benchmark runs on a tiny input (no timing assertions: numbers depend on the machine)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import components, ddim_steps, e2e, model_speed
from benchmarks.common import count_flops, median_time
from benchmarks.demo_run import DEMO_BBOX, quarter_bbox

HELDOUT = (
    Path(__file__).resolve().parents[2] / "data" / "samples" / "heldout" / "S2B_MSIL2A_20170924T93020_69_24"
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_flop_counter_counts_a_matmul_as_2mnk():
    a, b = torch.ones(8, 16), torch.ones(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    assert median_time(lambda: a @ b, repeats=2)["repeats"] == 2


def test_component_benchmark_on_a_tiny_tile(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert (
        components.main(
            ["--preset", "small", "--tile", "16", "--repeats", "1", "--ceiling-n", "128", "--out", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    names = {r["component"] for r in res["rows"]}
    assert names == {
        "rrdb_encoder",
        "degradation_encoder",
        "denoiser_step",
        "fusion_10m",
        "fusion_20m",
        "fusion_60m",
    }
    assert {r["dtype"] for r in res["rows"]} == {"fp32", "bf16_cl"}
    for r in res["rows"]:
        assert r["gflop"] > 0 and r["median_s"] > 0 and math.isfinite(r["share_of_ceiling"])
    assert "| denoiser_step | fp32 |" in capsys.readouterr().out


def test_model_speed_runs_from_a_saved_window_and_reports_batch_invariance(tmp_path):
    """The device check's path: the window saved here (no GDAL on the device machine) gives the scene's
    pixels, and each batch's tile 0 is compared with its batch-1 pixels (batch-invariant on CPU: 0)."""
    saved = tmp_path / "window.npz"
    assert model_speed.main(["--window", "24", "--save-window", str(saved)]) == 0
    for a, b in zip(model_speed.window_groups(24, str(saved)), model_speed.window_groups(24)):
        np.testing.assert_array_equal(a, b)
    out = tmp_path / "speed.json"
    argv = ["--scene", str(saved), "--window", "24", "--batches", "1,2", "--repeats", "1", "--steps", "1"]
    assert model_speed.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["tile0_max_abs_diff_to_batch1"] == 0.0 and r["tiles_per_s"] > 0 for r in rows)
    with pytest.raises(SystemExit, match="less than --window 48"):
        model_speed.window_groups(48, str(saved))


def test_ensemble_cost_measures_each_variant_against_the_nets_alone(tmp_path):
    assert model_speed.parse_ensembles("2:10m,4:10m+20m,8") == [(2, ("10m",)), (4, ("10m", "20m")), (8, None)]
    out = tmp_path / "ensembles.json"
    argv = ["--window", "24", "--batches", "1", "--repeats", "1", "--steps", "1", "--ensembles", "2:10m,8"]
    assert model_speed.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["off", "x2 10m", "x8 all groups"]
    assert rows[0]["ratio_to_off"] == 1.0 and all(r["seconds_per_tile"] > 0 for r in rows)


def test_ddim_sweep_runs_with_a_checkpoint_on_a_small_crop(tmp_path, capsys):
    from pipeline.models.diffusion import SRDiffusion, get_preset, save_sr_model
    from pipeline.models.fusion import FusionModel, preset_configs, save_fusion_model

    # untrained networks in the real checkpoint format: this checks the harness, not the fidelity
    torch.manual_seed(0)
    save_sr_model(SRDiffusion(get_preset("small")), tmp_path / "sr")
    save_fusion_model(FusionModel(preset_configs("small")), tmp_path / "fusion")
    out = tmp_path / "d.json"
    assert (
        ddim_steps.main(
            [
                "--scene",
                str(HELDOUT),
                "--steps",
                "1,2",
                "--crop",
                "72",
                "--sr-weights",
                str(tmp_path / "sr"),
                "--fusion-weights",
                str(tmp_path / "fusion"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["label"] for r in rows] == ["bicubic", "gs", "difffusr 1 steps", "difffusr 2 steps"]
    assert all(math.isfinite(r["all_psnr"]) and r["seconds"] > 0 for r in rows)
    assert "difffusr 2 steps" in capsys.readouterr().out


def test_guide_mix_diagnostic_scores_the_fusion_with_a_better_guide(tmp_path, capsys):
    """fusion[mix a]: a = 0 is the plain guide, a = 1 the native RGB; a perfect guide must score far
    better."""
    from benchmarks import fusion_heldout

    out = tmp_path / "mix.json"
    assert (
        fusion_heldout.main(
            ["--scenes", str(HELDOUT), "--no-sr", "--guide-mix", "0", "1", "--json", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    mean = res["mean"]
    assert mean["fusion[mix0]"] == mean["fusion[bicubic]"]  # a = 0 is the bicubic guide (no SR here)
    assert mean["fusion[mix1]"]["10m"]["psnr"] > mean["fusion[mix0]"]["10m"]["psnr"] + 1.0
    assert mean["fusion[mix1]"]["all"]["ergas"] < mean["fusion[mix0]"]["all"]["ergas"]
    assert math.isinf(res["guide_psnr"]["fusion[mix1]"])
    assert res["guide_psnr"]["fusion[mix0]"] == pytest.approx(res["guide_psnr"]["fusion[bicubic]"])
    assert "fusion[mix1]" in capsys.readouterr().out


def test_untrained_regression_guide_is_bicubic_plus_back_projection_and_keeps_constants():
    from benchmarks.guide_bound import RegressionGuide, bicubic_bp

    g = torch.Generator().manual_seed(0)
    lr = 0.05 + 0.2 * torch.rand((2, 3, 12, 12), generator=g)
    net = RegressionGuide(nf=8, blocks=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(lr), bicubic_bp(lr))
        flat = torch.full((1, 3, 12, 12), 0.3)
        torch.testing.assert_close(net(flat), torch.full((1, 3, 48, 48), 0.3))


def test_guide_bound_trains_validates_and_scores_the_fusion(tmp_path, capsys):
    from benchmarks import guide_bound

    austria = HELDOUT.parents[1] / "catalog" / "S2A_MSIL2A_20170613T101031_87_48"
    out = tmp_path / "run"
    assert (
        guide_bound.main(
            [
                "--train",
                str(austria),
                "--steps",
                "2",
                "--batch",
                "2",
                "--crop",
                "32",
                "--nf",
                "8",
                "--blocks",
                "1",
                "--threads",
                "1",
                "--val",
                str(austria),
                "--out",
                str(out),
                "--score",
                str(HELDOUT),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    hist = json.loads((out / "history.json").read_text())
    assert hist["steps"] == 2 and hist["history"][-1]["step"] == 2
    assert math.isfinite(hist["history"][-1]["regression"])
    res = json.loads((tmp_path / "s.json").read_text())["mean"]
    assert set(res) == {"bicubic+bp", "regression"}
    assert all(math.isfinite(v) for r in res.values() for v in r.values())
    assert "| regression |" in capsys.readouterr().out
    # the saved weights score again from --weights
    assert (
        guide_bound.main(["--weights", str(out / "guide.pt"), "--nf", "8", "--blocks", "1", "--threads", "1"])
        == 0
    )


def test_e2e_bare_compute_and_ratios_from_a_manifest(tmp_path):
    manifest = {
        "config": {"method": "bicubic", "model": {"steps": 20}, "compute": {"batch_tiles": 2}},
        "layout": {"core": 48, "halo": 6, "rows": 1, "cols": 2},
        "tiles": 2,
        "tiles_empty": 0,
        "timings_s": {
            "search": 0.5,
            "ingest": 1.0,
            "inference": 2.0,
            "mosaic": 1.0,
            "export": 0.5,
            "total": 5.0,
        },
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    out = tmp_path / "e.json"
    assert e2e.main(["--manifest", str(path), "--repeats", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bare"]["batches"] == 1 and res["bare"]["window_10m_px"] == 60
    assert res["ratio_end_to_end_over_bare"] == pytest.approx(5.0 / res["bare"]["bare_model_s"])


def test_real_windows_cover_larger_windows_than_the_patch():
    b10, b20, b60 = e2e.real_windows(132, 2)
    assert b10.shape == (2, 4, 132, 132) and b20.shape == (2, 6, 66, 66) and b60.shape == (2, 2, 22, 22)
    assert torch.isfinite(torch.from_numpy(b10)).all()


def test_quarter_bbox_has_a_quarter_of_the_area():
    w, s, e, n = quarter_bbox(DEMO_BBOX)
    W, S, E, N = DEMO_BBOX
    assert (e - w) * (n - s) == pytest.approx((E - W) * (N - S) / 4)


@pytest.mark.slow
def test_memory_and_e2e_on_the_demo_catalog(stac_api, tmp_path):
    """One monitored `difffusr run` on the quarter AOI: peaks of driver and workers, stage times, e2e
    ratio."""
    from benchmarks import memory
    from benchmarks.demo_run import demo_argv, run_monitored

    run = run_monitored(
        demo_argv(
            stac_api,
            tmp_path / "q",
            method="bicubic",
            bbox=quarter_bbox(DEMO_BBOX),
            extra=["--tile-size", "48", "--halo", "6"],
        )
    )
    assert run.returncode == 0, run.stderr_tail
    assert run.driver_peak_mb > 50 and run.worker_peak_mb > 50
    assert "| 1x |" in memory.markdown(
        {
            "1x": {
                "tiles": run.manifest["tiles"],
                "driver_peak_mb": run.driver_peak_mb,
                "worker_peak_mb": run.worker_peak_mb,
                "ray_system_peak_mb": run.ray_system_peak_mb,
                "wall_s": run.wall_s,
            }
        }
    )
    res = e2e.summarise(run.manifest, e2e.bare_compute(run.manifest, repeats=1))
    assert res["ratio_end_to_end_over_bare"] > 1.0
