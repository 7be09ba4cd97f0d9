"""The real all-MiniLM-L6-v2 through torch.export (tests/minilm_torch.py): the converted package's
weights map back onto the torch modules, compressed weights change the embeddings, importance
names line up with the package's weights."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import minilm_torch
from coreml_compress import inspect, optimize
from coreml_compress.torch import collect_importance

FOLDED = ["embedding_1_to_fp16", "embedding_2_to_fp16"]


@pytest.fixture(scope="module")
def package(model_dir: Path) -> Path:
    return minilm_torch.build_package(model_dir)


def test_package_weights_are_the_modules(package: Path, tmp_path: Path) -> None:
    report = inspect(package)
    names = {w.name for w in report}
    assert len(report) == 101
    assert "p_m_encoder_layer_0_attention_self_query_weight_to_fp16" in names
    reference = minilm_torch.sentence_embeddings(minilm_torch.load_encoder())

    encoder = minilm_torch.load_encoder()
    unmatched = minilm_torch.load_package_weights(encoder, package, tmp_path)
    assert unmatched == FOLDED
    fp16 = minilm_torch.mean_cosine(reference, minilm_torch.sentence_embeddings(encoder))
    assert 0.99999 < fp16 < 1.0  # every parameter now holds its fp16 rounding

    four_bits = optimize.OptimizationConfig(global_config=optimize.OpPalettizerConfig(nbits=4))
    small = optimize.palettize_weights(package, four_bits, output_path=tmp_path / "p4.mlpackage")
    encoder = minilm_torch.load_encoder()
    assert minilm_torch.load_package_weights(encoder, small, tmp_path) == FOLDED
    palettized = minilm_torch.mean_cosine(reference, minilm_torch.sentence_embeddings(encoder))
    assert 0.9 < palettized < fp16 - 1e-3, palettized  # measured: 0.950


def test_importance_names_map_onto_package_weights(package: Path) -> None:
    encoder = minilm_torch.load_encoder()
    importance = collect_importance(encoder, minilm_torch.calibration_items(), n_samples=3)
    assert len(importance) == 6 * 6  # q, k, v, attention output, intermediate, output per layer
    weights = [w.name for w in inspect(package)]
    for module, vector in importance.items():
        assert f"p_{module.replace('.', '_').lower()}_weight_to_fp16" in weights
        assert vector.shape == encoder.get_submodule(module).weight.shape[1:]
        assert bool((vector > 0).all())
