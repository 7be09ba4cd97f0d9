"""coremltools.optimize.torch scripts, written as a coremltools user writes them, after
``coreml_compress.patch_coremltools(torch=True)``: the classes are this engine's, unsupported
options go to coremltools' own classes with a warning, and each finalized model converts to a
package that decompresses to exactly the finalized torch weights."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import coreml_compress
import models
from coreml_compress import torch as engine
from torch import nn

warnings.filterwarnings("ignore", message=".*(Failed to load|scikit-learn|has not been tested).*")
logging.getLogger("coremltools").setLevel(logging.ERROR)
ct_pal = pytest.importorskip("coremltools.optimize.torch.palettization")
ct_quant = pytest.importorskip("coremltools.optimize.torch.quantization")
ct_prune = pytest.importorskip("coremltools.optimize.torch.pruning")
ct_layerwise = pytest.importorskip("coremltools.optimize.torch.layerwise_compression")

ROUTED = {
    ct_pal: ("DKMPalettizer", "PostTrainingPalettizer", "SKMPalettizer"),
    ct_quant: ("LinearQuantizer", "PostTrainingQuantizer"),
    ct_prune: ("MagnitudePruner",),
    ct_layerwise: ("LayerwiseCompressor",),
}


@pytest.fixture
def patched():
    originals = {(m, n): getattr(m, n) for m, names in ROUTED.items() for n in names}
    coreml_compress.patch_coremltools(torch=True)
    yield originals
    coreml_compress.unpatch_coremltools()


def conv_net() -> nn.Sequential:
    """A small image classifier (8×8 inputs, 4 classes) whose children run in sequence, so
    LayerwiseCompressor's default blocks are its layers."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 16, 3, padding=1)),
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
                ("relu2", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("flat", nn.Flatten()),
                ("fc1", nn.Linear(32 * 4 * 4, 64)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(64, 4)),
            ]
        )
    )


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() * 2 + (x[:, 1, 4:].mean((1, 2)) > 0).long()
    return x, y


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(0)
    model = conv_net()
    x, y = _data(512)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for i in range(30):
        idx = slice((i * 64) % 512, (i * 64) % 512 + 64)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _train(model, compressor, steps: int, seed: int = 1) -> float:
    x, y = _data(256, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = torch.tensor(0.0)
    for i in range(steps):
        idx = slice((i * 32) % 256, (i * 32) % 256 + 32)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        compressor.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------------------------
# the patch


def test_patch_routes_every_class_and_unpatch_restores(patched, convnet, tmp_path):
    from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressor
    from coremltools.optimize.torch.palettization import (
        DKMPalettizer,
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )
    from coremltools.optimize.torch.palettization.palettizer import DKMPalettizer as defined
    from coremltools.optimize.torch.pruning import MagnitudePruner
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer

    assert DKMPalettizer is defined  # the defining module is rebound too
    assert isinstance(DKMPalettizer(convnet), engine.DKMPalettizer)
    assert isinstance(
        PostTrainingPalettizer(convnet, PostTrainingPalettizerConfig()),
        engine.PostTrainingPalettizer,
    )
    assert isinstance(PostTrainingQuantizer(convnet), engine.PostTrainingQuantizer)
    assert isinstance(MagnitudePruner(convnet), engine.MagnitudePruner)
    yaml = tmp_path / "prune.yaml"
    yaml.write_text("global_config:\n  target_sparsity: 0.3\n")
    from_yaml = MagnitudePruner(convnet, str(yaml))  # read by coremltools' from_yaml
    assert isinstance(from_yaml, engine.MagnitudePruner)
    assert from_yaml._config.global_config.target_sparsity == 0.3
    assert isinstance(
        LayerwiseCompressor(convnet, {"global_config": {"algorithm": "gptq"}}),
        engine.LayerwiseCompressor,
    )
    coreml_compress.unpatch_coremltools()
    for (module, name), original in patched.items():
        assert getattr(module, name) is original
    assert ct_pal.palettizer.DKMPalettizer is patched[(ct_pal, "DKMPalettizer")]
    assert isinstance(ct_pal.DKMPalettizer(convnet), patched[(ct_pal, "DKMPalettizer")])


@pytest.mark.parametrize(
    "name,module,config,named",
    [
        (
            "DKMPalettizer",
            ct_pal,
            {"global_config": {"n_bits": 4, "palett_tau": 0.001}},
            "palett_tau=0.001",
        ),
        (
            "DKMPalettizer",
            ct_pal,
            {"global_config": {"n_bits": 2, "enforce_zero": True}},
            "enforce_zero=True",
        ),
        ("LinearQuantizer", ct_quant, None, "activation_dtype"),  # coremltools' default W8A8
        (
            "LinearQuantizer",
            ct_quant,
            {"global_config": {"activation_dtype": "float32", "weight_observer": "ema_min_max"}},
            "weight_observer",
        ),
        (
            "PostTrainingQuantizer",
            ct_quant,
            {"global_config": {"weight_dtype": torch.float8_e4m3fn}},
            "fp8",
        ),
    ],
)
def test_unsupported_goes_to_coremltools_with_one_warning(
    patched, convnet, name, module, config, named
):
    cls = getattr(module, name)
    with pytest.warns(RuntimeWarning, match=named) as record:
        made = cls(convnet, config)
    assert len([w for w in record if "ran on coremltools' own code" in str(w.message)]) == 1
    assert isinstance(made, patched[(module, name)])


def test_unsupported_module_type_goes_to_coremltools(patched):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    config = ct_quant.LinearQuantizerConfig.from_dict(
        {"global_config": {"activation_dtype": "float32"}}
    )
    with pytest.warns(RuntimeWarning, match="BatchNorm"):
        made = ct_quant.LinearQuantizer(model, config)
    assert isinstance(made, patched[(ct_quant, "LinearQuantizer")])
    attention = nn.Sequential(nn.MultiheadAttention(16, 2))
    with pytest.warns(RuntimeWarning, match=r"MultiheadAttention \(0\)"):
        made = ct_pal.PostTrainingPalettizer(attention)
    assert isinstance(made, patched[(ct_pal, "PostTrainingPalettizer")])


# ----------------------------------------------------------------------------------------------
# DKMPalettizer


def test_dkm_n_bits_4_trains_finalizes_and_converts(patched, convnet, tmp_path):
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    config = DKMPalettizerConfig.from_dict({"global_config": {"n_bits": 4}})
    palettizer = DKMPalettizer(convnet, config)
    with pytest.warns(UserWarning, match="not DKM's soft k-means"):
        model = palettizer.prepare()
    _train(model, palettizer, 8)
    report = palettizer.report()
    assert sorted(report) == ["conv2", "fc1"] and report["fc1"]["#params"] == 512 * 64
    assert report["fc1"]["error"] > 0 and report["fc1"]["#dtype"].startswith(":num_clusters: 16")
    final = palettizer.finalize()
    # weight_threshold 2048 (DKM's default) leaves conv1 (432 weights) and fc2 (256) dense
    assert "_COREML_/weight/lut" not in final.conv1.state_dict()
    for m in (final.conv2, final.fc1):
        meta = engine.metadata_of(m)
        assert meta["compression_type"].tolist() == [2]
        assert meta["lut"].shape[-2:] == (16, 1)
        assert len(torch.unique(m.weight)) <= 16
    models.assert_torch_exports(
        final, torch.randn(1, 3, 8, 8), tmp_path / "dkm.mlpackage", {"constexpr_lut_to_dense"}
    )


def test_dkm_config_fields_by_name_and_type(patched, convnet):
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    config = DKMPalettizerConfig.from_dict(
        {
            "module_type_configs": {
                "Linear": {
                    "n_bits": 2,
                    "weight_threshold": 100,
                    "granularity": "per_grouped_channel",
                    "group_size": 16,
                    "enable_per_channel_scale": True,
                },
            },
            "module_name_configs": {"conv2": {"n_bits": 3, "milestone": 2}},
        }
    )
    palettizer = DKMPalettizer(convnet, config)
    with pytest.warns(UserWarning):
        model = palettizer.prepare()
    dense = model.conv2.parametrizations.weight.original
    assert torch.equal(model.conv2.weight, dense)  # before its milestone
    palettizer.step()
    palettizer.step()
    assert torch.equal(model.conv2.weight, dense)  # coremltools enables at count 2, the 3rd call
    palettizer.step()
    assert len(torch.unique(model.conv2.weight)) <= 8
    final = palettizer.finalize()
    assert "_COREML_/weight/lut" not in final.conv1.state_dict()  # not selected
    assert engine.metadata_of(final.conv2)["lut"].shape == (1, 1, 1, 1, 8, 1)
    fc1 = engine.metadata_of(final.fc1)
    assert fc1["lut"].shape == (4, 1, 4, 1)
    w = convnet.fc1.weight.detach()
    # DKM's default per-channel scale: (max - min) / 2 per output channel
    torch.testing.assert_close(
        fc1["palettization_scale"].reshape(-1), 0.5 * (w.amax(1) - w.amin(1)), rtol=0, atol=0
    )
    assert "_COREML_/weight/lut" not in final.fc2.state_dict()  # 4 channels, groups of 16


def test_dkm_checkpoint_loads_in_a_fresh_process(patched, convnet, tmp_path):
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    config = {"global_config": {"n_bits": 4, "weight_threshold": 1000}}
    palettizer = DKMPalettizer(convnet, DKMPalettizerConfig.from_dict(config))
    with pytest.warns(UserWarning):
        model = palettizer.prepare()
    _train(model, palettizer, 3)
    torch.save(convnet.state_dict(), tmp_path / "base.pt")
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    x = torch.randn(2, 3, 8, 8)
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, warnings, torch
        sys.path.insert(0, {str(models.__file__.rsplit("/", 1)[0])!r})
        warnings.simplefilter("ignore")
        import coreml_compress
        coreml_compress.patch_coremltools(torch=True)
        from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig
        from test_torch_dropin import conv_net
        model = conv_net()
        model.load_state_dict(torch.load({str(tmp_path / "base.pt")!r}))
        p = DKMPalettizer(model, DKMPalettizerConfig.from_dict({config!r}))
        prepared = p.prepare()
        prepared.load_state_dict(torch.load({str(tmp_path / "ckpt.pt")!r}))
        io = torch.load({str(tmp_path / "io.pt")!r})
        assert torch.equal(prepared(io["x"]), io["y"])
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_old_lut_layout_checkpoint_is_refused_by_name():
    """Checkpoints from before the LUT became [groups, K, cluster_dim] hold [groups, K]."""
    from coreml_compress.errors import CheckpointError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    palettizer = engine.TrainingPalettizer(model, {"global_config": {"n_bits": 2}})
    prepared = palettizer.prepare()
    state = prepared.state_dict()
    key = "0.parametrizations.weight.0.lut"
    assert state[key].shape == (1, 4, 1)
    state[key] = state[key].squeeze(-1)
    with pytest.raises(CheckpointError, match=rf"{key} has shape \[1, 4\].*expected \[1, 4, 1\]"):
        prepared.load_state_dict(state)


def test_recluster_resets_the_lut_optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    pal = engine.TrainingPalettizer(
        model, {"global_config": {"n_bits": 2, "weight_threshold": 0, "recluster_interval": 2}}
    )
    prepared = pal.prepare()
    opt = torch.optim.Adam(prepared.parameters(), 1e-3)
    lut = prepared[0].parametrizations.weight[0].lut
    prepared(torch.randn(4, 64)).sum().backward()
    opt.step()
    assert lut in opt.state
    pal.step(opt)  # step 1: re-assignment, state kept
    assert lut in opt.state
    pal.step(opt)  # step 2: re-clustered, Adam restarts for this LUT
    assert lut not in opt.state


# ----------------------------------------------------------------------------------------------
# LinearQuantizer


def test_linear_quantizer_int8_per_channel_weight_only(patched, convnet, tmp_path):
    from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

    config = LinearQuantizerConfig.from_dict(
        {
            "global_config": {
                "weight_dtype": "qint8",
                "weight_per_channel": True,
                "activation_dtype": "float32",
            },
        }
    )
    runs = {}
    for cls in (LinearQuantizer, patched[(ct_quant, "LinearQuantizer")]):
        torch.manual_seed(5)
        quantizer = cls(convnet, config)
        model = quantizer.prepare(example_inputs=(torch.randn(1, 3, 8, 8),))
        _train(model, quantizer, 6)
        if cls is LinearQuantizer:
            report = quantizer.report()
            assert set(report) == {"conv1", "conv2", "fc1", "fc2"}
            assert report["fc1"]["qscheme"] == "symmetric" and report["fc1"]["per_channel"]
        runs[cls] = quantizer.finalize()
    ours, reference = runs[LinearQuantizer], runs[patched[(ct_quant, "LinearQuantizer")]]
    assert type(ours) is nn.Sequential  # not a torch.fx GraphModule
    ref_state = reference.state_dict()
    for name in ("conv1", "conv2", "fc1", "fc2"):
        # coremltools fuses a following ReLU: its module is then "<name>.0"
        ref = name if f"{name}.weight" in ref_state else f"{name}.0"
        meta = engine.metadata_of(getattr(ours, name))
        assert meta["compression_type"].tolist() == [3]
        assert int(meta["quantization_n_bits"]) == 8
        # the same observer and fake quantization as coremltools: the same training trajectory
        # up to float rounding (coremltools runs fused Conv+ReLU modules)
        ref_scale = ref_state[f"{ref}._COREML_/weight/quantization_scale"].float()
        scale = meta["quantization_scale"]
        torch.testing.assert_close(scale, ref_scale.reshape(scale.shape), rtol=2e-3, atol=0)
        w = getattr(ours, name).weight.detach()
        step = scale.reshape((-1,) + (1,) * (w.dim() - 1))
        assert ((w - ref_state[f"{ref}.weight"]).abs() <= 1.01 * step).all()
        codes = w / step
        torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    models.assert_torch_exports(
        ours,
        torch.randn(1, 3, 8, 8),
        tmp_path / "lq.mlpackage",
        {"constexpr_blockwise_shift_scale"},
    )


def test_linear_quantizer_milestones_follow_coremltools(patched):
    from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

    model = nn.Sequential(nn.Linear(8, 8))
    config = LinearQuantizerConfig.from_dict(
        {
            "global_config": {
                "weight_dtype": "quint4",
                "quantization_scheme": "affine",
                "activation_dtype": "float32",
                "milestones": [1, 2, 3, -1],
            }
        }
    )
    ours = LinearQuantizer(model, config)
    ref = patched[(ct_quant, "LinearQuantizer")](model, config)
    prepared = (ours.prepare(), ref.prepare(example_inputs=(torch.randn(1, 8),)))
    fq_ours = prepared[0][0].parametrizations.weight[0].fake_quant
    fq_ref = next(
        m for m in prepared[1].modules() if hasattr(m, "weight_fake_quant")
    ).weight_fake_quant
    for _ in range(5):
        assert (fq_ours.observer_enabled.item(), fq_ours.fake_quant_enabled.item()) == (
            fq_ref.observer_enabled.item(),
            fq_ref.fake_quant_enabled.item(),
        )
        assert (fq_ours.quant_min, fq_ours.quant_max) == (fq_ref.quant_min, fq_ref.quant_max)
        ours.step()
        ref.step()
    meta = engine.metadata_of(ours.finalize()[0])
    assert int(meta["quantization_n_bits"]) == 4 and "zero_point" in meta


# ----------------------------------------------------------------------------------------------
# LayerwiseCompressor


@pytest.mark.parametrize(
    "global_config,expected",
    [
        (
            {"algorithm": "sparse_gpt", "target_sparsity": 0.4, "weight_dtype": "float32"},
            {"constexpr_sparse_to_dense"},
        ),
        ({"algorithm": "gptq", "weight_dtype": "uint4"}, {"constexpr_blockwise_shift_scale"}),
    ],
    ids=["sparsegpt40", "gptq4"],
)
def test_layerwise_compressor(patched, convnet, tmp_path, global_config, expected):
    from coremltools.optimize.torch.layerwise_compression import (
        LayerwiseCompressor,
        LayerwiseCompressorConfig,
    )

    config = LayerwiseCompressorConfig.from_dict(
        {"global_config": global_config, "calibration_nsamples": 128}
    )
    x, _ = _data(128, 3)
    loader = [x[i : i + 1] for i in range(128)]
    compressor = LayerwiseCompressor(convnet, config)
    assert isinstance(compressor, engine.LayerwiseCompressor)
    compressed = compressor.compress(loader, "cpu")
    if global_config["algorithm"] == "sparse_gpt":
        for m in (compressed.conv2, compressed.fc1):
            assert (m.weight == 0).float().mean() >= 0.4
    models.assert_torch_exports(
        compressed, torch.randn(1, 3, 8, 8), tmp_path / "lw.mlpackage", expected
    )


def test_layerwise_default_sequential(patched, tmp_path):
    """GPTQ 4-bit on an MLP run block by block."""
    from coremltools.optimize.torch.layerwise_compression import (
        LayerwiseCompressor,
        LayerwiseCompressorConfig,
    )

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    config = LayerwiseCompressorConfig.from_dict(
        {
            "global_config": {
                "algorithm": "gptq",
                "weight_dtype": "uint4",
                "granularity": "per_block",
                "block_size": 16,
            }
        }
    )
    loader = [torch.randn(1, 32) for _ in range(128)]
    compressed = LayerwiseCompressor(model, config).compress(loader, "cpu")
    assert engine.metadata_of(compressed[0])["quantization_scale"].shape == (64, 2)
    models.assert_torch_exports(
        compressed,
        torch.randn(1, 32),
        tmp_path / "mlp.mlpackage",
        {"constexpr_blockwise_shift_scale"},
    )
    np.testing.assert_array_equal(
        engine.metadata_of(compressed[2])["quantization_n_bits"].numpy(), 4
    )


def test_layerwise_grouped_convolution(patched, tmp_path):
    """Each group of a grouped convolution is compressed against the Hessian of its own input
    channels: the same result as GPTQ on the equivalent ungrouped convolution of that group."""
    from coremltools.optimize.torch.layerwise_compression import (
        LayerwiseCompressor,
        LayerwiseCompressorConfig,
    )

    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU()).eval()
    config = LayerwiseCompressorConfig.from_dict(
        {"global_config": {"algorithm": "gptq", "weight_dtype": "uint4"}}
    )
    loader = [torch.randn(1, 4, 6, 6) for _ in range(16)]
    compressed = LayerwiseCompressor(model, config).compress(loader, "cpu")
    conv = model[0]
    for g in range(2):
        part = nn.Conv2d(2, 4, 3, padding=1)
        h = engine.layerwise.hessian_of(part, [x[:, 2 * g : 2 * g + 2] for x in loader])
        w = conv.weight.detach()[4 * g : 4 * g + 4].reshape(4, -1)
        expected = engine.gptq(w, h, 4)
        np.testing.assert_array_equal(
            compressed[0].weight.detach()[4 * g : 4 * g + 4].reshape(4, -1).numpy(),
            expected["weight"],
        )
    assert engine.metadata_of(compressed[0])["quantization_scale"].shape == (8, 1)
    models.assert_torch_exports(
        compressed,
        torch.randn(1, 4, 6, 6),
        tmp_path / "grouped.mlpackage",
        {"constexpr_blockwise_shift_scale"},
    )


@pytest.mark.parametrize("lut_dtype", ["int8", "uint8"])
def test_post_training_palettizer_int8_lut(patched, convnet, tmp_path, lut_dtype):
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    config = PostTrainingPalettizerConfig.from_dict(
        {
            "global_config": {
                "n_bits": 4,
                "lut_dtype": lut_dtype,
                "granularity": "per_grouped_channel",
                "group_size": 4,
            }
        }
    )
    compressor = PostTrainingPalettizer(convnet, config)
    assert isinstance(compressor, engine.PostTrainingPalettizer)
    ours = compressor.compress()
    reference = patched[(ct_pal, "PostTrainingPalettizer")](convnet, config).compress()
    for name in ("conv1", "fc1"):
        meta = engine.metadata_of(getattr(ours, name))
        ref = engine.metadata_of(getattr(reference, name))
        assert meta["compression_type"].tolist() == ref["compression_type"].tolist() == [2, 3]
        assert set(meta) == set(ref)
        for field in ("lut", "quantization_scale"):
            assert meta[field].shape == ref[field].shape, field
        codes = meta["lut"] / meta["quantization_scale"]
        torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    if lut_dtype == "uint8":
        return  # one export is enough for the CI time budget
    models.assert_torch_exports(
        ours,
        torch.randn(1, 3, 8, 8),
        tmp_path / "lut8.mlpackage",
        {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"},
    )


@pytest.mark.parametrize("algorithm", ["ptp", "skm"])
def test_vector_palettization(patched, convnet, tmp_path, algorithm):
    """cluster_dim 2: coremltools' LUT layout and vector_axis; SKM's sensitivity-weighted
    refinement never raises the weighted error of its unweighted start."""
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
        SKMPalettizer,
        SKMPalettizerConfig,
    )

    # (no lut_dtype: ct.convert drops vector_axis for an int8 vector LUT, coremltools' own too)
    module = {"n_bits": 2, "cluster_dim": 2, "granularity": "per_grouped_channel", "group_size": 8}
    x, y = _data(16, 4)
    data = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]

    def loss_fn(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    ptp = PostTrainingPalettizer(
        convnet,
        PostTrainingPalettizerConfig.from_dict(
            {"global_config": module, "module_type_configs": {"Linear": None}}
        ),
    )
    assert isinstance(ptp, engine.PostTrainingPalettizer)
    start = ptp.compress()
    if algorithm == "skm":
        skm = SKMPalettizer(
            convnet,
            SKMPalettizerConfig.from_dict(
                {
                    "global_config": module,
                    "module_type_configs": {"Linear": None},
                    "calibration_nsamples": 4,
                }
            ),
        )
        assert isinstance(skm, engine.SKMPalettizer)
        sensitivity = skm.compute_sensitivity(data, loss_fn)
        ours = skm.compress(sensitivity=sensitivity)
        w0 = convnet.conv2.weight.detach()
        imp = sensitivity["conv2.weight"]
        err = lambda m: float((imp * (m.conv2.weight.detach() - w0) ** 2).sum())
        assert err(ours) <= err(start) * (1 + 1e-6)
    else:
        ours = start
    reference = patched[(ct_pal, "PostTrainingPalettizer")](
        convnet,
        PostTrainingPalettizerConfig.from_dict(
            {"global_config": module, "module_type_configs": {"Linear": None}}
        ),
    ).compress()
    for name in ("conv1", "conv2"):
        meta = engine.metadata_of(getattr(ours, name))
        ref = engine.metadata_of(getattr(reference, name))
        assert meta["compression_type"].tolist() == ref["compression_type"].tolist() == [2]
        assert meta["lut"].shape == ref["lut"].shape
        assert int(meta["vector_axis"]) == int(ref["vector_axis"]) == 0
    models.assert_torch_exports(
        ours,
        torch.randn(1, 3, 8, 8),
        tmp_path / f"{algorithm}.mlpackage",
        {"constexpr_lut_to_dense"},
    )


@pytest.mark.parametrize("lut_dtype", ["i8", "u8", "bf16", "vector"])
def test_dkm_lut_dtype_and_cluster_dim(patched, tmp_path, lut_dtype):
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    module = {"n_bits": 3, "lut_dtype": lut_dtype, "weight_threshold": 0}
    if lut_dtype == "vector":  # cluster_dim 2: LUTs of 2-vectors of consecutive output channels
        module.update(lut_dtype="f32", cluster_dim=2)
    config = DKMPalettizerConfig.from_dict({"global_config": module})
    palettizer = DKMPalettizer(model, config)
    with pytest.warns(UserWarning):
        prepared = palettizer.prepare()
    opt = torch.optim.Adam(prepared.parameters(), 1e-3)
    for _ in range(3):
        prepared(torch.randn(16, 32)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        palettizer.step()
    final = palettizer.finalize()
    meta = engine.metadata_of(final[0])
    lut = meta["lut"]
    if lut_dtype == "vector":
        assert lut.shape == (1, 1, 8, 2) and int(meta["vector_axis"]) == 0
        w = final[0].weight.detach()
        vectors = w.reshape(32, 2, 32).transpose(1, 2).reshape(-1, 2)
        assert len(torch.unique(vectors, dim=0)) <= 8
        models.assert_torch_exports(
            final, torch.randn(1, 32), tmp_path / "dkm_vec.mlpackage", {"constexpr_lut_to_dense"}
        )
        return
    if lut_dtype == "bf16":
        assert meta["compression_type"].tolist() == [2]
        assert torch.equal(lut, lut.to(torch.bfloat16).float())
        return
    assert meta["compression_type"].tolist() == [2, 3]
    codes = lut / meta["quantization_scale"]
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    assert codes.abs().max() <= 127.001
    assert ("zero_point" in meta) == (lut_dtype == "u8")
    if lut_dtype == "u8":
        return  # one export is enough for the CI time budget
    models.assert_torch_exports(
        final,
        torch.randn(1, 32),
        tmp_path / "dkm8.mlpackage",
        {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"},
    )


def test_skm_sensitivity_workers_and_fsdp_policy_as_coremltools(patched, monkeypatch, caplog):
    """compress() takes coremltools' fsdp_auto_wrap_policy: without CUDA, more than one
    sensitivity worker is coremltools' logged fallback to one process (the policy unused, the
    result unchanged); with CUDA the sharded computation is coremltools' own, with a warning."""
    from coremltools.optimize.torch._utils.fsdp_utils import ModuleWrapPolicy
    from coremltools.optimize.torch.palettization import SKMPalettizer, SKMPalettizerConfig

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    config = SKMPalettizerConfig.from_dict(
        {"global_config": {"n_bits": 2}, "calibration_nsamples": 4}
    )
    data = [torch.randn(2, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]

    def loss_fn(m, x):
        return m(x).square().mean()

    policy = ModuleWrapPolicy(module_classes=[nn.Linear])
    skm = SKMPalettizer(model, config)
    assert isinstance(skm, engine.SKMPalettizer)
    one = skm.compress(data, loss_fn)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        two = skm.compress(data, loss_fn, num_sensitivity_workers=2, fsdp_auto_wrap_policy=policy)
    assert "only supported on GPUs with CUDA" in caplog.text
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(a, b)

    calls = []
    original = patched[(ct_pal, "SKMPalettizer")]

    def sharded(self, dataloader, loss_fn, **kwargs):
        calls.append(kwargs)
        return {
            f"{n}.weight": torch.ones_like(m.weight)
            for n, m in model.named_children()
            if isinstance(m, nn.Linear)
        }

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(original, "compute_sensitivity", sharded)
    with pytest.warns(RuntimeWarning, match="num_sensitivity_workers=2 .*fsdp_auto_wrap_policy"):
        skm.compress(data, loss_fn, num_sensitivity_workers=2, fsdp_auto_wrap_policy=policy)
    assert calls == [{"num_sensitivity_workers": 2, "fsdp_auto_wrap_policy": policy}]
