"""Geometric self-ensemble of the group nets (`self_ensemble`, `--self-ensemble`): the fused answer of a
flipped or turned scene is the flipped or turned answer, the option is stored with the weights and can be set
per run, and it leaves training untouched.

On a bundled real held-out patch, degraded x4 with the sensor model as in the Wald protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline.config import ENSEMBLE_SIZES, MethodOptions
from pipeline.errors import ConfigError
from pipeline.inference.methods import get_method
from pipeline.models import baselines
from pipeline.models.fusion import (
    FusionNetConfig,
    load_fusion_model,
    save_fusion_model,
    set_self_ensemble,
)
from pipeline.models.fusion.config import ENSEMBLE_SIZES as MODEL_ENSEMBLE_SIZES
from pipeline.models.fusion.ensemble import DIHEDRAL, dihedral_mean
from pipeline.models.sensor import wald_degrade
from pipeline.train.scenes import read_any_scene

HELDOUT = Path(__file__).resolve().parents[3] / "data" / "samples" / "heldout"


@pytest.fixture(scope="module")
def inputs() -> list[torch.Tensor]:
    """The Ireland patch degraded x4, cut to 24 x 24 px at 40 m (whole pixels of every grid the gains use, so
    no edge padding breaks the symmetry), and its bicubic RGB guide: (b10, b20, b60, guide)."""
    scene = read_any_scene(HELDOUT / "S2A_MSIL2A_20170617T113321_4_55")
    lr = [wald_degrade(torch.from_numpy(x)[None], 4) for x in scene.groups]
    b10, b20, b60 = lr[0][..., :24, :24], lr[1][..., :12, :12], lr[2][..., :4, :4]
    return [b10, b20, b60, baselines.upsample(baselines.rgb_of(b10), 4)]


def _mirror(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def _gap(model, inputs: list[torch.Tensor], t: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Largest difference between fusing the transformed scene and transforming the fused scene."""
    return float((model.fuse(*(t(x) for x in inputs)) - t(model.fuse(*inputs))).abs().max())


def test_ensembled_fusion_commutes_with_flips_and_turns(inputs) -> None:
    model = load_fusion_model()  # shipped weights, injection gains on
    assert model.configs["10m"].self_ensemble == 4  # shipped: x4 on the 10 m net (docs/fusion.md)
    set_self_ensemble(model, 1)
    plain = {t: _gap(model, inputs, t) for t in (_mirror, _transpose)}
    # the nets alone are not equivariant: a flipped scene gets a visibly different answer
    assert min(plain.values()) > 1e-4
    set_self_ensemble(model, 8)
    assert _gap(model, inputs, _mirror) < 1e-5 and _gap(model, inputs, _transpose) < 1e-5
    set_self_ensemble(model, 4)  # the shape-keeping half: mirrors and the half turn
    assert _gap(model, inputs, _mirror) < 1e-5 and _gap(model, inputs, _transpose) > 1e-4
    set_self_ensemble(model, 1)  # switching it off gives back the network alone, bit for bit
    assert _gap(model, inputs, _mirror) == plain[_mirror]


def test_dihedral_mean_inverts_every_transform_and_keeps_non_square_shapes() -> None:
    ms, guide = torch.rand(2, 3, 6, 10), torch.rand(2, 3, 6, 10)

    def net(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + 2 * b  # exactly equivariant: the ensemble must give it back unchanged

    for size in (2, 4, 8):
        assert torch.allclose(dihedral_mean(net, ms, guide, size), net(ms, guide), atol=1e-6)
    assert len(set(DIHEDRAL)) == 8
    with pytest.raises(ValueError, match="self-ensemble size"):
        dihedral_mean(net, ms, guide, 3)


def test_ensemble_size_is_validated_and_stored_with_the_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="self_ensemble"):
        FusionNetConfig(group="10m", self_ensemble=3)
    model = set_self_ensemble(set_self_ensemble(load_fusion_model(), 1), 2, ("10m",))
    again = load_fusion_model(save_fusion_model(model, tmp_path / "w"))
    assert {k: c.self_ensemble for k, c in again.configs.items()} == {"10m": 2, "20m": 1, "60m": 1}
    # a config written before the option loads as the network alone
    old = model.configs["20m"].to_json()
    old.pop("self_ensemble")
    assert FusionNetConfig.from_json(old).self_ensemble == 1


def test_training_forward_ignores_the_ensemble(inputs) -> None:
    model = load_fusion_model()
    n = model.configs["10m"]
    ms, gd = torch.rand(1, len(n.input_bands), 24, 24), torch.rand(1, 3, 24, 24)
    lr_own = torch.rand(1, len(n.output_bands), 6, 6)
    before = model({"10m": (ms, gd, lr_own)})["10m"]
    set_self_ensemble(model, 8)
    assert torch.equal(model({"10m": (ms, gd, lr_own)})["10m"], before)


def test_run_option_overrides_the_weights_and_bad_sizes_fail_early() -> None:
    assert ENSEMBLE_SIZES == MODEL_ENSEMBLE_SIZES
    assert MethodOptions().self_ensemble is None  # the weights decide
    method = get_method("difffusr", MethodOptions(self_ensemble=4))
    assert {c.self_ensemble for c in method.fusion_model.configs.values()} == {4}
    with pytest.raises(ConfigError, match="--self-ensemble 3"):
        MethodOptions(self_ensemble=3)
