"""coreml_compress.torch in a training loop (TrainingPalettizer, MagnitudePruner) and the data-free
PostTrainingQuantizer, against coremltools.optimize.torch and through ct.convert."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import models
from coreml_compress.errors import DeploymentWarning
from coreml_compress.torch import (
    MagnitudePruner,
    PostTrainingPalettizer,
    PostTrainingQuantizer,
    TrainingPalettizer,
    metadata_of,
    weighted_kmeans,
)
from torch import nn

warnings.filterwarnings("ignore")
logging.getLogger("coremltools").setLevel(logging.ERROR)
ct_prune = pytest.importorskip("coremltools.optimize.torch.pruning")
ct_quant = pytest.importorskip("coremltools.optimize.torch.quantization")


# ----------------------------------------------------------------------------------------------
# training-time palettization


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 4, generator=torch.Generator().manual_seed(7))
    return x, torch.tanh(x @ w) + torch.sin(2 * x[:, :4])


def _fit(model, step_fn, x, y, steps: int, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step_fn is not None:
            step_fn()


def _loss(model, x, y) -> float:
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    x, y = _toy_data(2048, 0)
    xv, yv = _toy_data(512, 1)
    model = nn.Sequential(
        nn.Linear(16, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 4)
    )
    _fit(model, None, x, y, 300, 3e-3, 0)
    return model.eval(), (x, y), (xv, yv)


def test_training_palettizer_beats_post_training_and_exports(toy, tmp_path):
    model, (x, y), (xv, yv) = toy
    dense_loss = _loss(model, xv, yv)
    ptp = PostTrainingPalettizer(model, {"global_config": {"n_bits": 2}}).compress()
    ptp_loss = _loss(ptp, xv, yv)
    assert ptp_loss > 2 * dense_loss  # 2-bit post-training palettization hurts

    cfg = {
        "global_config": {"n_bits": 2, "weight_threshold": 0},
        "module_name_configs": {
            # grouped LUTs with a per-channel scale, re-clustered by the native k-means
            "2": {
                "n_bits": 2,
                "weight_threshold": 0,
                "granularity": "per_grouped_channel",
                "group_size": 16,
                "enable_per_channel_scale": True,
                "recluster_interval": 60,
            },
        },
    }
    pal = TrainingPalettizer(model, cfg)
    prepared = pal.prepare()
    # At preparation the model is the exact k-means palettization (= PTP on per-tensor layers).
    np.testing.assert_array_equal(
        prepared[0].weight.detach().numpy(), ptp[0].weight.detach().numpy()
    )
    lut0 = prepared[0].parametrizations.weight[0].lut.detach().clone()
    _fit(prepared, pal.step, x, y, 150, 3e-3, 1)
    assert pal.step_count == 150
    trained_loss = _loss(prepared, xv, yv)
    assert not torch.equal(lut0, prepared[0].parametrizations.weight[0].lut.detach())

    final = pal.finalize()
    final_loss = _loss(final, xv, yv)
    assert final_loss == pytest.approx(trained_loss, rel=1e-6)
    # measured: dense 0.29, 2-bit PTP 0.76, fine-tuned 0.40
    assert final_loss < 0.6 * ptp_loss, (dense_loss, ptp_loss, final_loss)
    assert isinstance(prepared[0].weight, torch.Tensor)  # finalize(inplace=False) left it intact
    for i, groups in ((0, 1), (2, 6), (4, 1)):
        meta = metadata_of(final[i])
        assert meta["compression_type"].tolist() == [2]
        assert tuple(meta["lut"].shape) == (groups, 1, 4, 1)
        # what ct.convert does: nearest LUT entry of weight / scale, times scale
        w = final[i].weight.detach()
        scale = meta.get("palettization_scale", torch.ones(w.shape[0], 1))
        v = (w / scale).reshape(groups, -1)
        lut = meta["lut"].reshape(groups, 4)
        idx = (v[:, :, None] - lut[:, None, :]).abs().argmin(-1)
        assert torch.equal(torch.gather(lut, 1, idx).reshape(w.shape) * scale, w)
    assert "_COREML_/metadata_version" in final.state_dict()
    models.assert_torch_exports(
        final,
        xv[:1],
        tmp_path / "pal.mlpackage",
        {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"},
    )


def test_training_palettizer_milestone_and_recluster():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Conv1d(4, 8, 3))
    cfg = {
        "global_config": {
            "n_bits": 3,
            "weight_threshold": 0,
            "milestone": 2,
            "recluster_interval": 3,
            "channel_axis": 0,
        }
    }
    pal = TrainingPalettizer(model, cfg)
    m = pal.prepare()
    original = m[0].parametrizations.weight.original
    assert torch.equal(m[0].weight, original)  # before the milestone: the dense weight
    pal.step()
    assert len(torch.unique(m[0].weight)) > 8
    pal.step()  # milestone: native k-means
    lut = m[0].parametrizations.weight[0]
    _, luts, _ = weighted_kmeans(original.detach(), None, 1, 8)
    np.testing.assert_array_equal(lut.lut.detach()[..., 0].numpy(), luts)
    assert len(torch.unique(m[0].weight)) <= 8 and len(torch.unique(m[2].weight)) <= 8
    # gradients reach the centroids and (straight-through) the dense weight
    m(torch.randn(4, 4, 32)).sum().backward()
    assert lut.lut.grad is not None and lut.lut.grad.abs().sum() > 0
    assert original.grad is not None and original.grad.abs().sum() > 0
    with torch.no_grad():
        original.add_(torch.randn_like(original) * 0.05)
    pal.step()  # re-assignment to the nearest centroid
    x = original.detach().reshape(-1, 1)
    centroids = lut.lut.detach()[0, :, 0]
    nearest = centroids[(x - centroids).abs().argmin(1)]
    torch.testing.assert_close(m[0].weight.detach().reshape(-1), nearest, rtol=0, atol=0)
    for _ in range(2):
        pal.step()  # step 5 = milestone + 3: re-clustered from the dense weight
    _, luts, _ = weighted_kmeans(original.detach(), None, 1, 8)
    np.testing.assert_array_equal(lut.lut.detach()[..., 0].numpy(), luts)
    final = pal.finalize(inplace=True)
    assert final is m and metadata_of(m[2])["lut"].shape == (1, 1, 1, 8, 1)


# ----------------------------------------------------------------------------------------------
# pruning


def _train_pruner(pruner, model, steps=10):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = model(torch.randn(8, 24, generator=g)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        pruner.step()


PRUNE_CONFIGS = [
    {"scheduler": {"update_steps": [2, 4, 6, 8]}, "target_sparsity": 0.75, "initial_sparsity": 0.1},
    {"scheduler": {"update_steps": "range(1, 10, 3)"}, "n_m_ratio": [3, 4]},
    {"scheduler": {"begin_step": 3}, "target_sparsity": 0.6},
    {"scheduler": {"update_steps": [1, 5], "power": 1}, "target_sparsity": 0.5, "block_size": 2},
]


@pytest.mark.parametrize("global_config", PRUNE_CONFIGS, ids=range(len(PRUNE_CONFIGS)))
def test_pruner_matches_coremltools(global_config):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 8))
    cfg = {"global_config": global_config}
    ours = MagnitudePruner(base, cfg)
    ref = ct_prune.MagnitudePruner(base, ct_prune.MagnitudePrunerConfig.from_dict(cfg))
    m1, m2 = ours.prepare(), ref.prepare()
    sparsities = []
    for _ in range(10):
        _train_pruner(ours, m1, 1)
        _train_pruner(ref, m2, 1)
        sparsities.append(ours.sparsity()["0"])
        assert sparsities[-1] == ref._pruner_info["0"].sparsity_level
        for i in (0, 2):
            assert torch.equal(m1[i].parametrizations.weight.original, m2[i].weight_orig)
            assert torch.equal(m1[i].parametrizations.weight[0].mask, m2[i].weight_mask)
    assert sparsities[-1] == pytest.approx(global_config.get("target_sparsity", 0.75), abs=1e-12)
    f1, f2 = ours.finalize(), ref.finalize()
    sd1, sd2 = f1.state_dict(), f2.state_dict()
    assert sorted(sd1) == sorted(sd2)
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert hasattr(m1[0], "parametrizations")  # finalize(inplace=False) left it intact


def test_pruner_conv_masks_match_coremltools():
    from coreml_compress.torch.pruning import magnitude_mask
    from coreml_compress.torch.pruning import n_m_mask as our_n_m
    from coremltools.optimize.torch.pruning._utils import magnitude_ranked_mask, n_m_mask

    torch.manual_seed(0)
    for shape in [(8, 6, 3, 3), (10, 4, 5), (16, 24)]:
        w = torch.randn(shape)
        for s in (0.0, 0.3, 0.77, 1.0):
            for g in ("per_scalar", "per_kernel", "per_channel"):
                for b in (1, 3):
                    ref = magnitude_ranked_mask(w, s, b, g).float().expand_as(w)
                    assert torch.equal(magnitude_mask(w, s, b, g), ref), (shape, s, g, b)
        for n, m, d in ((2, 4, 1), (1, 3, 0), (3, 4, 1)):
            assert torch.equal(our_n_m(w, n, m, d), n_m_mask(w, (n, m), d))


def test_pruner_export(tmp_path):
    torch.manual_seed(1)
    base = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32))
    pruner = MagnitudePruner(
        base,
        {
            "global_config": {
                "scheduler": {"update_steps": "range(0, 8, 2)"},
                "target_sparsity": 0.8,
            }
        },
    )
    model = pruner.prepare()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(8):
        model(torch.randn(16, 64)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
    final = pruner.finalize()
    for i in (0, 2):
        assert float((final[i].weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
        assert metadata_of(final[i])["compression_type"].tolist() == [1]
    models.assert_torch_exports(
        final, torch.randn(1, 64), tmp_path / "pruned.mlpackage", {"constexpr_sparse_to_dense"}
    )


# ----------------------------------------------------------------------------------------------
# PostTrainingQuantizer


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3)
        self.conv1d = nn.Conv1d(8, 16, 3)
        self.deconv = nn.ConvTranspose2d(8, 12, 3)
        self.fc1 = nn.Linear(64, 96)
        self.fc2 = nn.Linear(96, 32)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


PTQ_CONFIGS = [
    {},
    {"global_config": {"weight_dtype": "uint4", "granularity": "per_block", "block_size": 16}},
    {
        "global_config": {
            "weight_dtype": "int4",
            "granularity": "per_block",
            "block_size": 16,
            "quantization_scheme": "affine",
        }
    },
    {"global_config": {"weight_dtype": "uint8", "granularity": "per_tensor"}},
    {"global_config": {"weight_dtype": "int8", "granularity": "per_block", "block_size": (4, 0)}},
    {
        "global_config": {"weight_dtype": "int4"},
        "module_type_configs": {"Conv2d": None},
        "module_name_configs": {"fc2": {"weight_dtype": "uint8"}},
    },
]


@pytest.mark.parametrize("cfg", PTQ_CONFIGS, ids=range(len(PTQ_CONFIGS)))
def test_post_training_quantizer_matches_coremltools(cfg):
    torch.manual_seed(0)
    net = _Net()
    ref = ct_quant.PostTrainingQuantizer(
        net, ct_quant.PostTrainingQuantizerConfig.from_dict(cfg)
    ).compress()
    per_block = cfg.get("global_config", {}).get("granularity") == "per_block"
    for config in (cfg, ct_quant.PostTrainingQuantizerConfig.from_dict(cfg)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = PostTrainingQuantizer(net, config).compress()
        # Per-block scales do not run on the Neural Engine: one warning names the weights.
        deployment = [w for w in caught if issubclass(w.category, DeploymentWarning)]
        assert len(deployment) == per_block, [str(w.message) for w in deployment]
        if per_block:
            assert "fc1.weight" in str(deployment[0].message)
            assert deployment[0].filename == __file__
        sd, sd_ref = ours.state_dict(), ref.state_dict()
        # coremltools' PTQ does not register the (ignored) metadata version; we do, like its
        # other optimizers.
        assert int(sd.pop("_COREML_/metadata_version")) == 1
        assert sorted(sd) == sorted(sd_ref)
        for k in sd:
            assert sd[k].dtype == sd_ref[k].dtype or sd[k].is_floating_point(), k
            assert torch.equal(sd[k].to(sd_ref[k].dtype), sd_ref[k]), k
    assert not torch.equal(ours.fc1.weight, net.fc1.weight)  # not in place by default


@pytest.mark.parametrize(
    "cfg",
    [
        {"weight_dtype": "int4", "granularity": "per_block", "block_size": 16},
        {"weight_dtype": "uint8"},
        {"weight_dtype": "int8", "quantization_scheme": "affine"},
    ],
    ids=["int4-block16", "uint8-channel", "int8-affine"],
)
def test_post_training_quantizer_export(tmp_path, cfg):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32))
    q = PostTrainingQuantizer(net, {"global_config": cfg}).compress()
    models.assert_torch_exports(
        q, torch.randn(1, 64), tmp_path / "q.mlpackage", {"constexpr_blockwise_shift_scale"}
    )
