"""coreml_compress.torch against coremltools.optimize.torch: GPTQ, SparseGPT, sensitive k-means and
the ct.convert export, on a small MLP and on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import models
from coreml_compress.errors import DeploymentWarning
from coreml_compress.torch import (
    Hessian,
    LayerwiseCompressor,
    LayerwiseCompressorConfig,
    PostTrainingPalettizer,
    SKMPalettizer,
    gptq,
    metadata_of,
    sparsegpt,
)
from torch import nn

warnings.filterwarnings("ignore")
logging.getLogger("coremltools").setLevel(logging.ERROR)
ct_layerwise = pytest.importorskip("coremltools.optimize.torch.layerwise_compression")
ct_pal = pytest.importorskip("coremltools.optimize.torch.palettization")


# ----------------------------------------------------------------------------------------------
# models and data


class _Layer(nn.Module):
    def __init__(self, hidden: int = 384, inter: int = 1536):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.up = nn.Linear(hidden, inter)
        self.down = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)
        self.heads = 12

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        split = lambda x: x.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        ctx = (a @ v).transpose(1, 2).reshape(b, t, d)
        h = self.ln1(h + self.out(ctx))
        return self.ln2(h + self.down(nn.functional.gelu(self.up(h))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2 (BERT encoder) in plain torch, loaded from the packaged safetensors."""

    def __init__(self, layers: int = 6):
        super().__init__()
        import safetensors.numpy

        sd = safetensors.numpy.load_file(str(models.minilm_safetensors_path()))
        self.word = nn.Embedding(30522, 384)
        self.pos = nn.Embedding(512, 384)
        self.ln = nn.LayerNorm(384, eps=1e-12)
        self.encoder = nn.Sequential(*(_Layer() for _ in range(layers)))
        names = {
            "word.weight": "embeddings.word_embeddings.weight",
            "pos.weight": "embeddings.position_embeddings.weight",
            "ln.weight": "embeddings.LayerNorm.weight",
            "ln.bias": "embeddings.LayerNorm.bias",
        }
        parts = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "out": "attention.output.dense",
            "ln1": "attention.output.LayerNorm",
            "up": "intermediate.dense",
            "down": "output.dense",
            "ln2": "output.LayerNorm",
        }
        for i in range(layers):
            for ours, theirs in parts.items():
                for p in ("weight", "bias"):
                    names[f"encoder.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        state = {k: torch.from_numpy(np.array(sd[v], dtype=np.float32)) for k, v in names.items()}
        self.load_state_dict(state)
        self.token_type = torch.from_numpy(
            np.array(sd["embeddings.token_type_embeddings.weight"][0], dtype=np.float32)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        h = self.ln(self.word(ids) + self.pos(pos) + self.token_type)
        return self.encoder(h)


@pytest.fixture(scope="module")
def minilm1() -> MiniLM:
    # One layer keeps coremltools' Python column loop (the reference run) within the CI budget.
    return MiniLM(layers=1).eval()


def _correlated(seed: int, n: int, batch: int, tokens: int, cols: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(16, cols, generator=torch.Generator().manual_seed(99))
    return [
        torch.randn(batch, tokens, cols, generator=g)
        + torch.randn(batch, tokens, 16, generator=g) @ basis * 0.5
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 384), nn.GELU(), nn.Linear(384, 128)).eval()


def _layer_inputs(model: nn.Module, data: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inputs of every Linear of ``model`` on ``data`` (as rows)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(
            lambda mod, a, o, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]))
        )
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        for x in data:
            model(x)
    for h in handles:
        h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _recon(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.norm(x.double() @ (w - q).detach().double().T))


def _layerwise_errors(orig, compressed, data, layer_names) -> dict[str, float]:
    """‖W·X − Ŵ·X‖ per layer, X = the inputs the compressed model's own earlier layers give."""
    xs = _layer_inputs(compressed, data)
    mods = dict(orig.named_modules())
    cmods = dict(compressed.named_modules())
    return {n: _recon(mods[n].weight, cmods[n].weight, xs[n]) for n in layer_names}


# ----------------------------------------------------------------------------------------------
# kernels


def test_hessian_matches_formula():
    xs = [np.random.default_rng(i).normal(size=(3, 5, 12)).astype(np.float32) for i in range(3)]
    h = Hessian(12)
    for x in xs:
        h.add(x)
    rows = np.concatenate([x.reshape(-1, 12) for x in xs]).astype(np.float64)
    np.testing.assert_allclose(h.h, 2.0 / 9 * rows.T @ rows, rtol=1e-4, atol=1e-4)
    assert h.nsamples == 9
    t = Hessian(12)
    t.add(torch.from_numpy(xs[0][0]))  # 2-D input: one sample, as coremltools counts
    assert t.nsamples == 1


def test_kernels_accept_torch_and_numpy_and_reject_bad_input():
    x = np.random.default_rng(0).normal(size=(200, 32)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    h = Hessian(32)
    h.add(x)
    a = gptq(w, h, 4, block_size=8)
    b = gptq(torch.from_numpy(w), torch.from_numpy(h.h), 4, block_size=8)
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert a["scale"].shape == (16, 4)
    codes = a["weight"] / np.repeat(a["scale"], 8, axis=1) + np.repeat(a["zero_point"], 8, axis=1)
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    s = sparsegpt(w, h, n_m=(2, 4), group=16)
    assert (s["weight"].reshape(16, 8, 4) == 0).sum(axis=2).min() >= 2
    from coreml_compress.errors import CoreMLCompressError

    with pytest.raises(CoreMLCompressError):
        gptq(w, h, 4, block_size=7)
    with pytest.raises(CoreMLCompressError):
        gptq(w, np.zeros((31, 31), np.float32), 4)
    with pytest.raises(CoreMLCompressError):
        gptq(w, -np.eye(32, dtype=np.float32), 4)


# ----------------------------------------------------------------------------------------------
# GPTQ / SparseGPT against coremltools

CONFIGS = [
    {"algorithm": "gptq", "weight_dtype": "uint4", "granularity": "per_block", "block_size": 32},
    {"algorithm": "gptq", "weight_dtype": "uint8"},
    {"algorithm": "gptq", "weight_dtype": "uint4", "use_activation_order_heuristic": True},
    {"algorithm": "gptq", "weight_dtype": "uint3", "quantization_scheme": "affine"},
    {"algorithm": "gptq", "weight_dtype": "uint4", "enable_normal_float": True},
    {"algorithm": "sparse_gpt"},
    {"algorithm": "sparse_gpt", "n_m_ratio": [2, 4], "weight_dtype": "float32"},
]


@pytest.mark.parametrize("global_config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_layerwise_matches_coremltools_on_mlp(mlp, global_config):
    data = _correlated(1, 6, 4, 32, 256)
    cfg = {"global_config": global_config, "calibration_nsamples": 6}
    ref = ct_layerwise.LayerwiseCompressor(
        mlp, ct_layerwise.LayerwiseCompressorConfig.from_dict(cfg)
    ).compress(data, "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = LayerwiseCompressor(mlp, cfg).compress(data, "cpu")
    deployment = [w for w in caught if issubclass(w.category, DeploymentWarning)]
    assert len(deployment) == (global_config.get("block_size") is not None)
    if deployment:
        assert "0.weight, 2.weight" in str(deployment[0].message)
        assert deployment[0].filename == __file__
    e_ref = _layerwise_errors(mlp, ref, data, ["0", "2"])
    e_ours = _layerwise_errors(mlp, ours, data, ["0", "2"])
    for name in e_ref:
        assert e_ours[name] <= 1.01 * e_ref[name], (name, e_ours, e_ref)
    sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
    assert sorted(k for k in sd_ref if "_COREML_" in k) == sorted(
        k for k in sd_ours if "_COREML_" in k
    )
    for i in (0, 2):
        meta = metadata_of(ours[i])
        ref_meta = metadata_of(ref[i])
        assert meta["compression_type"].tolist() == ref_meta["compression_type"].tolist()
        w = ours[i].weight.detach()
        if "quantization_scale" in meta:
            s, z = meta["quantization_scale"], meta["zero_point"]
            assert s.shape == ref_meta["quantization_scale"].shape
            if global_config.get("block_size") is None:  # per-channel scales: identical
                torch.testing.assert_close(s, ref_meta["quantization_scale"].float())
            rep = w.shape[1] // s.shape[1]
            codes = w / s.repeat_interleave(rep, 1) + z.repeat_interleave(rep, 1)
            assert torch.allclose(codes, codes.round(), atol=2e-3)
            assert (
                codes.round().min() >= 0
                and codes.round().max() <= 2 ** int(meta["quantization_n_bits"]) - 1
            )
        if "lut" in meta:
            v = w / meta["palettization_scale"]
            lut = meta["lut"].flatten()
            assert torch.min((v.unsqueeze(-1) - lut).abs(), dim=-1).values.max() < 1e-5
        if global_config["algorithm"] == "sparse_gpt":
            assert (w == 0).float().mean() >= 0.5


def test_layerwise_minilm_gpt_cacher(minilm1):
    minilm = minilm1
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(1000, 20000, (2, 32), generator=g) for _ in range(4)]
    cfg = {
        "global_config": {
            "algorithm": "gptq",
            "weight_dtype": "uint4",
            "block_size": 32,
            "granularity": "per_block",
        },
        "module_name_configs": {r"encoder\.0\.down": {"algorithm": "sparse_gpt"}},
        "layers": [r"encoder\.\d+"],
        "input_cacher": "gpt",
        "calibration_nsamples": 4,
    }
    ref = ct_layerwise.LayerwiseCompressor(
        minilm, ct_layerwise.LayerwiseCompressorConfig.from_dict(cfg)
    ).compress(data, "cpu")
    ours = LayerwiseCompressor(minilm, LayerwiseCompressorConfig.from_dict(cfg)).compress(
        data, "cpu"
    )
    names = [n for n, m in minilm.named_modules() if isinstance(m, nn.Linear)]
    e_ref = _layerwise_errors(minilm, ref, data, names)
    e_ours = _layerwise_errors(minilm, ours, data, names)
    assert len(names) == 6
    for n in names:
        assert e_ours[n] <= 1.01 * e_ref[n], (n, e_ours[n], e_ref[n])
    assert metadata_of(ours.encoder[0].down)["compression_type"].tolist() == [1, 3]
    assert metadata_of(ours.encoder[0].up)["quantization_scale"].shape == (1536, 12)
    assert "_COREML_/metadata_version" in ours.state_dict()
    # Config from YAML and from a coremltools object give the same result.
    import io

    import yaml

    y = LayerwiseCompressorConfig.from_yaml(io.StringIO(yaml.safe_dump(cfg)))
    c = LayerwiseCompressorConfig.coerce(ct_layerwise.LayerwiseCompressorConfig.from_dict(cfg))
    assert y == LayerwiseCompressorConfig.from_dict(cfg)
    assert c.global_config == y.global_config and c.input_cacher == "gpt"


# ----------------------------------------------------------------------------------------------
# sensitive k-means


def test_skm_weighted_error_not_worse_than_coremltools(minilm1, tmp_path):
    minilm = minilm1
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(1000, 20000, (2, 16), generator=g) for _ in range(4)]

    def loss_fn(model, ids):
        return model(ids).pow(2).mean()

    cfg = {
        "global_config": {"n_bits": 4, "granularity": "per_grouped_channel", "group_size": 16},
        "module_type_configs": {"Embedding": None},
        "calibration_nsamples": 4,
    }
    skm = ct_pal.SKMPalettizer(minilm, ct_pal.SKMPalettizerConfig.from_dict(cfg))
    path = str(tmp_path / "sens.pt")
    skm.compute_sensitivity(data, loss_fn, path)
    ref = skm.compress(sensitivity_path=path)
    ours = SKMPalettizer(minilm, cfg).compress(sensitivity_path=path)
    ours_fisher = SKMPalettizer(minilm, cfg).compress(dataloader=data, loss_fn=loss_fn)
    sens = torch.load(path)
    ref_mods, our_mods = dict(ref.named_modules()), dict(ours.named_modules())
    fisher_mods = dict(ours_fisher.named_modules())
    checked = 0
    for name, m in minilm.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        s = sens[f"{name}.weight"]
        e_ref = float((s * (m.weight - ref_mods[name].weight) ** 2).sum())
        e_ours = float((s * (m.weight - our_mods[name].weight) ** 2).sum())
        e_fisher = float((s * (m.weight - fisher_mods[name].weight) ** 2).sum())
        assert e_ours <= e_ref * (1 + 1e-6), (name, e_ours, e_ref)
        assert e_fisher <= e_ref * 1.05, (name, e_fisher, e_ref)
        lut = metadata_of(our_mods[name])["lut"]
        assert lut.shape == metadata_of(ref_mods[name])["lut"].shape
        per_group = our_mods[name].weight.detach().reshape(lut.shape[0], -1)
        assert all(len(torch.unique(r)) <= 16 for r in per_group)
        checked += 1
    assert checked == 6


def test_post_training_palettizer_exact(mlp):
    cfg = {
        "global_config": {
            "n_bits": 3,
            "granularity": "per_grouped_channel",
            "group_size": 32,
            "enable_per_channel_scale": True,
        }
    }
    ours = PostTrainingPalettizer(mlp, cfg).compress()
    ref = ct_pal.PostTrainingPalettizer(
        mlp, ct_pal.PostTrainingPalettizerConfig.from_dict(cfg)
    ).compress()
    for i in (0, 2):
        w = mlp[i].weight
        e_ours = float(((w - ours[i].weight) ** 2).sum())
        e_ref = float(((w - ref[i].weight) ** 2).sum())
        assert e_ours <= e_ref * (1 + 1e-6)
        assert metadata_of(ours[i])["palettization_scale"].shape == (w.shape[0], 1)


# ----------------------------------------------------------------------------------------------
# export through ct.convert


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("gptq4", {"constexpr_blockwise_shift_scale"}),
        ("gptq_int8", {"constexpr_blockwise_shift_scale"}),
        ("nf4", {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
        ("sparsegpt", {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"}),
        ("sparse_only", {"constexpr_sparse_to_dense"}),
        ("skm", {"constexpr_lut_to_dense"}),
    ],
)
def test_export_decompresses_to_module_weights(mlp, tmp_path, kind, expected):
    data = _correlated(3, 4, 2, 16, 256)
    layerwise = {
        "gptq4": {
            "algorithm": "gptq",
            "weight_dtype": "uint4",
            "block_size": 32,
            "granularity": "per_block",
        },
        "gptq_int8": {"algorithm": "gptq", "weight_dtype": "int8"},
        "nf4": {"algorithm": "gptq", "weight_dtype": "uint4", "enable_normal_float": True},
        "sparsegpt": {"algorithm": "sparse_gpt"},
        "sparse_only": {"algorithm": "sparse_gpt", "weight_dtype": "float32"},
    }
    if kind == "skm":
        model = SKMPalettizer(
            mlp,
            {
                "global_config": {
                    "n_bits": 4,
                    "granularity": "per_grouped_channel",
                    "group_size": 16,
                }
            },
        ).compress(dataloader=data, loss_fn=lambda m, x: m(x).pow(2).mean())
    else:
        model = LayerwiseCompressor(mlp, {"global_config": layerwise[kind]}).compress(data)
    path = tmp_path / f"{kind}.mlpackage"
    models.convert_torch(model, torch.randn(1, 256), path)
    ops = set(models.op_types(path))
    assert expected <= ops, ops
    dense = [v for v in models.dense_weights(path).values() if v.ndim == 2]
    module_weights = {
        tuple(model[i].weight.shape): model[i].weight.detach().numpy() for i in (0, 2)
    }
    assert len(dense) == 2
    for v in dense:
        np.testing.assert_array_equal(v.astype(np.float32), module_weights[v.shape])
