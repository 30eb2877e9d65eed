"""``hf-encoder``: any Hugging Face text encoder (BERT, RoBERTa, MPNet, DistilBERT) + mean pooling + a head.

One class, :class:`HFEncoder`, puts a ``transformers`` encoder behind the model contract the way the
sentence-transformers models are used: ``features(x)`` is the mean of the last hidden states over the
real tokens (no pooler, no ``[CLS]``), ``head`` a new ``nn.Linear``, ``blocks()`` = embeddings, the
layers, head. ``minilm`` (:mod:`.minilm`) and ``mpnet`` (:mod:`.mpnet`) are this class with a
published checkpoint; ``hf-encoder`` takes any local folder (``folder=PATH``), and ``safereuse import``
reads such a folder into the one of the three that fits (:func:`import_hf_folder`).

**One input vocabulary.** Every text dataset is tokenised once, with the shared uncased WordPiece
tokenizer of :func:`safereuse.data.text.default_tokenizer` (``[PAD]`` = 0), so data, triggers, RIPPLe's
embedding surgery and coverage masks never depend on the model. A folder whose own tokenizer differs
is *aligned* to it when it is read (:func:`align_vocabulary`): the word-embedding table is re-indexed so
that row ``i`` holds the folder's embedding of shared token ``i``, found with the folder's own tokenizer
(``AutoTokenizer``, offline). For the uncased WordPiece family (BERT-uncased, MiniLM, DistilBERT-uncased,
MPNet: the same 30,522 entries, MPNet's shifted by its 4 extra specials) every token is found as itself
and the aligned model gives the same outputs as the original on its own tokenizer's ids; for other
vocabularies (RoBERTa's byte-level BPE, cased models) a token the folder spells differently is the mean
of the rows of the pieces the folder's tokenizer makes of it (counted in the import record). Weights are
read from ``model.safetensors`` only (never unpickled); ``pytorch_model.bin`` is refused.

Reference: Devlin et al., "BERT", NAACL 2019; Liu et al., "RoBERTa", 2019; Song et al., "MPNet:
Masked and Permuted Pre-training for Language Understanding", NeurIPS 2020; Sanh et al.,
"DistilBERT", 2019; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.

Example:
    >>> cfg = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    ...        "intermediate_size": 32, "vocab_size": 50}
    >>> m = HFEncoder(3, "roberta", cfg).eval()
    >>> x = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
    >>> m(x).shape, m.block_names()
    (torch.Size([2, 3]), ['roberta.embeddings', 'roberta.encoder.layer.0', 'fc'])
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from ..data.text import default_tokenizer
from ..errors import SafeReuseError
from .contract import InputSpec, ReusableModel
from .factory import create_model
from .registry import MODELS

#: model_type -> (config class, model class, layer list path, padding offsets the positions)
ENCODERS: dict[str, tuple[str, str, str, bool]] = {
    "bert": ("BertConfig", "BertModel", "encoder.layer", False),
    "roberta": ("RobertaConfig", "RobertaModel", "encoder.layer", True),
    "mpnet": ("MPNetConfig", "MPNetModel", "encoder.layer", True),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "transformer.layer", False),
}

#: Generic ``PretrainedConfig`` arguments that do not shape the encoder (left out of ``config``).
_NOT_SHAPE = {
    "self", "transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "use_cache", "is_decoder", "add_cross_attention", "classifier_dropout", "qa_dropout",
    "seq_classif_dropout", "tie_word_embeddings", "kwargs",
}  # fmt: skip

#: Keys of a Hugging Face checkpoint the sentence-embedding form does not use (pooler, task heads).
UNUSED_PREFIXES = (
    "pooler.", "classifier.", "cls.", "lm_head.", "pre_classifier.", "qa_outputs.",
    "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "embeddings.position_ids",
    "embeddings.token_type_ids",
)  # fmt: skip

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

#: Transfer (student) settings every method gets on a text encoder, over the method's own defaults and
#: under the user's values (:func:`safereuse.config.student_params`; the factory's ``student_fit``).
#: The values of the demo's and ``examples/nlp.yaml``'s hand-set NLP settings (issue 25: with the
#: methods' image recipe — SGD lr 0.01, label smoothing 0.1, 20 epochs — a ReMoS student of a MiniLM
#: teacher fell to 59 % on Amazon sentences, fine-tune 79 %); they await the validation study
#: ``docs/results/nlp-select.yaml``.
TEXT_STUDENT_FIT: dict[str, Any] = {
    "optimizer": "adam",  # decoupled weight decay: AdamW (none here)
    "lr": 3e-5,
    "epochs": 3,
    "batch_size": 16,
    "label_smoothing": 0.0,
    "weight_decay": 0.0,
}

#: Per-method settings on a text encoder, over :data:`TEXT_STUDENT_FIT` (the factory's
#: ``student_method_fit``). Methods that train from re-initialised weights take retrain's larger lr (the
#: demo's 1e-4); those whose head learns at ``lr × 1`` get finetune's head rate (``× 10``); the pruning
#: ratios are the ReMoS artifact's NLP configs (about 10 % / 30 % of the Linear weights).
TEXT_STUDENT_METHODS: dict[str, dict[str, Any]] = {
    "retrain": {"lr": 1e-4},
    "delta-r": {"lr": 1e-4},
    "renofeation": {"lr": 1e-4},
    "linear-probe": {"head_lr_mult": 10.0},
    "lwf": {"head_lr_mult": 10.0},
    "mag-prune": {"ratio": 0.3},
    "remos": {"ratio": 0.1},
}

#: Files a tokenizer folder may hold (any one is enough for ``AutoTokenizer``).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")

#: Shared special tokens and the roles a folder's tokenizer gives them.
_ROLES = {
    "[PAD]": ("pad_token",),
    "[CLS]": ("cls_token", "bos_token"),
    "[SEP]": ("sep_token", "eos_token"),
    "[UNK]": ("unk_token",),
    "[MASK]": ("mask_token",),
}


def encoder_options(model_type: str) -> list[str]:
    """The config keys that shape an encoder of ``model_type`` (what ``config`` may set).

    Raises:
        SafeReuseError: a model type other than those of :data:`ENCODERS`.

    Example:
        >>> encoder_options("distilbert")[:4]
        ['vocab_size', 'max_position_embeddings', 'sinusoidal_pos_embds', 'n_layers']
    """
    if model_type not in ENCODERS:
        raise SafeReuseError(
            f"model type {model_type!r} is not a supported encoder",
            fix=f"use a {', '.join(ENCODERS)} model folder",
        )
    cfg_cls = getattr(transformers, ENCODERS[model_type][0])
    return [p for p in inspect.signature(cfg_cls.__init__).parameters if p not in _NOT_SHAPE]


def read_hf_config(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """``(model_type, options)`` of a Hugging Face model folder's ``config.json``.

    Raises:
        SafeReuseError: no ``config.json``, not JSON, or not an encoder of :data:`ENCODERS`.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SafeReuseError(f"{folder} has no config.json", fix="pass a Hugging Face model folder")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise SafeReuseError(f"{path} is not valid JSON ({exc})", fix="re-download the model") from None
    if not isinstance(cfg, dict):
        raise SafeReuseError(f"{path} is not a JSON object", fix="re-download the model")
    kind = str(cfg.get("model_type", "bert"))
    if kind not in ENCODERS:
        raise SafeReuseError(
            f"{path} describes a {kind!r} model, not a supported encoder",
            fix=f"pass a {', '.join(ENCODERS)} model folder",
        )
    keep = encoder_options(kind)
    return kind, {k: cfg[k] for k in keep if k in cfg}


def read_hf_weights(folder: str | Path, model_type: str) -> dict[str, torch.Tensor]:
    """The encoder weights of a folder's ``model.safetensors`` (``{model_type}.`` prefix of a
    ``…For…`` model stripped; pooler, task heads and position-id buffers dropped); never unpickled.

    Raises:
        SafeReuseError: the file is missing (a ``pytorch_model.bin`` alone is refused) or not safetensors.
    """
    folder = Path(folder)
    path = folder / "model.safetensors"
    if not path.is_file():
        if any((folder / n).is_file() for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")):
            raise SafeReuseError(
                f"{folder} holds pickled or framework weights (pytorch_model.bin …), which safereuse never "
                "unpickles",
                fix="convert them to model.safetensors (save_pretrained(..., safe_serialization=True))",
            )
        raise SafeReuseError(f"{folder} has no model.safetensors", fix="convert the weights to safetensors")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafeReuseError(
            f"{path} is not a valid safetensors file ({exc})", fix="re-download it"
        ) from None
    prefix = f"{model_type}."
    if any(k.startswith(prefix) for k in state):  # a …For… model: the encoder is under its type's name
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}


def _same_vocabulary(folder: Path, shared: dict[str, int]) -> bool:
    """Whether the folder's WordPiece tokenizer has exactly the shared vocabulary (read as JSON / text,
    without building a tokenizer)."""
    try:
        if (folder / "tokenizer.json").is_file():
            model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("model", {})
            return model.get("type") == "WordPiece" and model.get("vocab") == shared
        if (folder / "vocab.txt").is_file():
            lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
            return {t: i for i, t in enumerate(lines)} == shared
    except (ValueError, OSError, AttributeError):
        return False
    return False


def _load_tokenizer(folder: Path) -> Any:
    """The folder's own tokenizer (``AutoTokenizer``, local files only, no remote code)."""
    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SafeReuseError(
            f"the tokenizer in {folder} cannot be read ({' '.join(str(exc).split())[:100]})",
            fix="save it with tokenizer.save_pretrained(folder)",
        ) from None


def _identity(tokenizer: str | None, n: int) -> dict[str, Any]:
    """The alignment record of a table that already has the shared vocabulary."""
    return {"tokenizer": tokenizer, "identity": True, "exact": n, "composed": 0, "unknown": 0}


def align_vocabulary(
    folder: str | Path, embedding: torch.Tensor, model_type: str
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Re-index a word-embedding table from the folder's vocabulary to the shared data vocabulary.

    Row ``i`` of the result is the folder's embedding of the shared tokenizer's token ``i``: the row of
    the same token (specials by role: ``[CLS]`` → the folder's ``cls_token`` / ``bos_token`` …), else the
    mean of the rows of the pieces the folder's tokenizer makes of it (a ``##`` piece is tokenised
    without the ``##``), else the folder's unknown-token row.

    Args:
        folder: the model folder (its tokenizer files).
        embedding: the folder's ``[V_own, H]`` word embeddings.
        model_type: the encoder kind (for messages).

    Returns:
        ``([V_shared, H] table, record)`` with the record ``{"tokenizer", "exact", "composed",
        "unknown", "identity"}`` (counts of shared tokens).

    Raises:
        SafeReuseError: no tokenizer files (unless the table already has the shared vocabulary's size
            and the folder is BERT-uncased-like), an unreadable tokenizer, a tokenizer whose ids do not
            fit the table.
    """
    folder = Path(folder)
    shared_tok = default_tokenizer()
    shared = sorted(shared_tok._tok.get_vocab().items(), key=lambda kv: kv[1])
    n_shared = len(shared)
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        if model_type in ("bert", "distilbert") and embedding.shape[0] == n_shared:
            # a bare BERT folder of the shared vocabulary's size: the one safe reading is the identity
            return embedding, _identity(None, n_shared)
        raise SafeReuseError(
            f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])})",
            fix="save the model's tokenizer into the folder (tokenizer.save_pretrained(folder))",
        )
    if embedding.shape[0] == n_shared and _same_vocabulary(folder, dict(shared)):
        # the shared vocabulary itself (e.g. MiniLM's package): nothing to re-index, no tokenizer to build
        return embedding, _identity("same", n_shared)
    tok = _load_tokenizer(folder)
    own = tok.get_vocab()
    if own == dict(shared) and embedding.shape[0] == n_shared:  # fast path: the same vocabulary
        return embedding, _identity(type(tok).__name__, n_shared)
    if own and max(own.values()) >= embedding.shape[0]:
        raise SafeReuseError(
            f"the tokenizer in {folder} has ids up to {max(own.values())} but the model has "
            f"{embedding.shape[0]} embedding rows",
            fix="pass the tokenizer saved with this model",
        )
    wordpiece = (
        type(tok.backend_tokenizer.model).__name__ == "WordPiece" if tok.is_fast else "##" in "".join(own)
    )
    unk = own.get(str(tok.unk_token)) if tok.unk_token is not None else None
    rows: list[list[int]] = [[]] * n_shared  # every entry is replaced below
    exact = 0
    todo: list[tuple[int, str]] = []
    for token, i in shared:
        roles = _ROLES.get(token)
        if roles is not None:
            name = next((getattr(tok, r) for r in roles if getattr(tok, r, None) is not None), None)
            if name is not None and str(name) in own:
                rows[i], exact = [own[str(name)]], exact + 1
                continue
        if wordpiece and token in own:
            rows[i], exact = [own[token]], exact + 1
        else:
            # BPE spells a word start with a leading space ("Ġword"); a "##" piece continues a word
            text = token[2:] if token.startswith("##") else (token if wordpiece else " " + token)
            todo.append((i, text))
    composed = unknown = 0
    if todo:
        texts = [t for _, t in todo]
        if tok.is_fast:  # the Rust tokenizer directly: 30k short strings in a fraction of a second
            pieces = [e.ids for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
        else:
            pieces = tok(texts, add_special_tokens=False)["input_ids"]
        for (i, _), ids in zip(todo, pieces, strict=True):
            ids = [j for j in ids if j != unk]
            if len(ids) == 1:
                exact += 1
            elif ids:
                composed += 1
            else:
                unknown += 1
            rows[i] = ids or ([unk] if unk is not None else [0])
    identity = all(r == [i] for i, r in enumerate(rows)) and embedding.shape[0] == n_shared
    record = {"tokenizer": type(tok).__name__, "identity": identity, "exact": exact,
              "composed": composed, "unknown": unknown}  # fmt: skip
    if identity:
        return embedding, record
    flat = torch.tensor([j for r in rows for j in r], dtype=torch.long)
    offsets = torch.tensor([0, *torch.tensor([len(r) for r in rows]).cumsum(0)[:-1].tolist()])
    with torch.no_grad():
        table = F.embedding_bag(flat, embedding.float(), offsets, mode="mean").to(embedding.dtype)
    return table.contiguous(), record


def _classes(model_type: str) -> tuple[Any, Any]:
    cfg_name, model_name, _, _ = ENCODERS[model_type]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


class HFEncoder(ReusableModel):
    """A Hugging Face encoder with mean pooling and a Linear head, behind the model contract.

    Args:
        num_classes: outputs of the head.
        model_type: ``bert``, ``roberta``, ``mpnet`` or ``distilbert`` (:data:`ENCODERS`).
        config: the encoder's options (keys of :func:`encoder_options`), over ``defaults``.
        weights_dir: a folder with ``model.safetensors`` (and its tokenizer) to load the encoder
            from, vocabulary aligned (:func:`align_vocabulary`); None: random weights.
        max_len: the sequence length inputs have (recorded in ``input_spec.size``).
        train_bf16: bfloat16 autocast while training (weights, optimiser and evaluation stay float32);
            None: when the device has native bfloat16.
        defaults: the architecture's own options (e.g. MiniLM's, MPNet's config).
        input_pad_id: the padding id of the inputs (the shared tokenizer's ``[PAD]``, 0).

    The input vocabulary is the shared data tokenizer's (``config["vocab_size"]`` rows). Inputs are
    trimmed to the batch's last real token before the encoder (right padding with an attention mask
    changes nothing at the real tokens).

    Example:
        >>> m = HFEncoder(2, "mpnet", {"hidden_size": 16, "num_hidden_layers": 1, "vocab_size": 50,
        ...                            "num_attention_heads": 2, "intermediate_size": 32}).eval()
        >>> m.features(torch.tensor([[1, 5, 2, 0]])).shape, m.vocab_size
        (torch.Size([1, 16]), 50)
    """

    head_name = "fc"
    takes_text = True  # token ids, not pixels: image attacks and input-shape checks do not apply

    def __init__(
        self,
        num_classes: int = 2,
        model_type: str = "bert",
        config: dict[str, Any] | None = None,
        weights_dir: str | Path | None = None,
        max_len: int = 64,
        train_bf16: bool | None = None,
        defaults: dict[str, Any] | None = None,
        input_pad_id: int = 0,
    ) -> None:
        super().__init__(InputSpec(1, (1, int(max_len)), (0.0,), (1.0,)))
        allowed = encoder_options(model_type)
        unknown = sorted(set(config or {}) - set(allowed))
        if unknown:
            raise SafeReuseError(
                f"unknown {model_type} option(s) {unknown}", fix=f"use some of {', '.join(allowed)}"
            )
        cfg = {**(defaults or {}), **(config or {})}
        cfg_cls, model_cls = _classes(model_type)
        hf_cfg = cfg_cls(**cfg)
        hf_cfg._attn_implementation = "sdpa" if getattr(model_cls, "_supports_sdpa", False) else "eager"
        self.model_type = model_type
        self.pad_id = int(input_pad_id)
        self._layers_path = ENCODERS[model_type][2]
        # RoBERTa / MPNet count positions from their padding id + 1 (HF's create_position_ids_from_input_ids)
        self._position_pad = int(hf_cfg.pad_token_id) if ENCODERS[model_type][3] else None
        kwargs = {} if model_type == "distilbert" else {"add_pooling_layer": False}
        setattr(self, model_type, model_cls(hf_cfg, **kwargs))
        self.fc = nn.Linear(int(hf_cfg.hidden_size), num_classes)
        self.vocabulary: dict[str, Any] = {}
        if weights_dir is not None and self.fc.weight.device.type != "meta":
            self.vocabulary = self.load_folder(weights_dir)
        self.word_embeddings.padding_idx = self.pad_id  # the shared [PAD] row gets no gradient
        self._tokenizer: Any = None
        self.train_bf16 = train_bf16

    @property
    def encoder_module(self) -> nn.Module:
        """The ``transformers`` encoder (``self.bert``, ``self.mpnet`` …)."""
        return getattr(self, self.model_type)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The word-embedding table (rows indexed by the shared input vocabulary)."""
        return self.encoder_module.embeddings.word_embeddings

    def load_folder(self, folder: str | Path) -> dict[str, Any]:
        """Load the encoder's weights from a Hugging Face folder, vocabulary aligned.

        Returns:
            The alignment record of :func:`align_vocabulary`.

        Raises:
            SafeReuseError: missing or unsafe files, weights that do not fit the config.
        """
        state = read_hf_weights(folder, self.model_type)
        key = "embeddings.word_embeddings.weight"
        record: dict[str, Any] = {}
        if key in state:
            state[key], record = align_vocabulary(folder, state[key], self.model_type)
        missing, unexpected = self.encoder_module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SafeReuseError(
                f"{folder} does not fit its {self.model_type} config: {len(missing)} missing "
                f"({', '.join(missing[:2])}), {len(unexpected)} unexpected ({', '.join(unexpected[:2])})",
                fix=f"pass a {self.model_type} folder whose config.json matches its weights",
            )
        return record

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
        return int(self.word_embeddings.num_embeddings)

    @property
    def max_positions(self) -> int:
        """The longest input the position embeddings cover."""
        limit = int(self.encoder_module.config.max_position_embeddings)
        return limit - (self._position_pad + 1) if self._position_pad is not None else limit

    def attention_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``1`` on real tokens, ``0`` on padding (``[N, L]``, long)."""
        return (x != self.pad_id).long()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() or x.dim() != 2:
            raise SafeReuseError(
                f"{self.info.arch if self.info else self.model_type} takes token ids [N, L] (integers), "
                f"got {x.dtype} {tuple(x.shape)}",
                fix="tokenise with safereuse.data.text (text datasets already are)",
            )
        vocab = self.vocab_size
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab):
            raise SafeReuseError(
                f"token ids span {int(x.min())}-{int(x.max())} but the vocabulary has {vocab} entries",
                fix="tokenise with the model's own tokenizer (safereuse.data.text.default_tokenizer)",
            )
        limit = self.max_positions
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
        kwargs: dict[str, Any] = {"input_ids": x, "attention_mask": mask}
        if self._position_pad is not None:
            # the model's own padding offset, from the shared mask (its pad id is not the inputs')
            kwargs["position_ids"] = mask.cumsum(1) * mask + self._position_pad
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self._bf16(x.device)):
            hidden = self.encoder_module(**kwargs).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        # mean pooling over real tokens: the sentence-embedding form the encoder was trained for
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _bf16(self, device: torch.device) -> bool:
        if not self.training or self.train_bf16 is False:
            return False
        if self.train_bf16 is None:
            return native_bf16(device)
        return True

    def block_names(self) -> list[str]:
        n = len(self.encoder_module.get_submodule(self._layers_path))
        t = self.model_type
        layers = [f"{t}.{self._layers_path}.{i}" for i in range(n)]
        if t != "mpnet":
            return [f"{t}.embeddings", *layers, "fc"]
        # MPNet: a layer returns a tuple, so each layer block joins its three parts (the block's output
        # is the last part's: the layer's hidden states); the relative position bias, one table shared
        # by every layer, joins the embeddings (whose output stays the block's)
        bias = f"{t}.encoder.relative_attention_bias"
        parts = ("attention", "intermediate", "output")
        return [f"{bias}+{t}.embeddings", *("+".join(f"{b}.{p}" for p in parts) for b in layers), "fc"]


def on_meta() -> bool:
    """Whether models are being built on the meta device (shapes only: no weights files needed).

    Example:
        >>> with torch.device("meta"):
        ...     inside = on_meta()
        >>> on_meta(), inside
        (False, True)
    """
    return torch.empty(0).device.type == "meta"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16, a CPU with AVX512-BF16 / AMX).

    Example:
        >>> native_bf16(torch.device("meta"))
        False
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            bool(getattr(cpu, f, lambda: False)())
            for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


@MODELS.register(
    "hf-encoder", "a local Hugging Face encoder folder (BERT/RoBERTa/MPNet/DistilBERT) + mean pooling"
)
def hf_encoder(
    num_classes: int = 2,
    in_channels: int = 1,
    image_size: int = 64,
    pretrained: bool = True,
    folder: str | None = None,
    model_type: str = "bert",
    config: dict[str, Any] | None = None,
    train_bf16: bool | None = None,
) -> HFEncoder:
    """Any local Hugging Face encoder folder for sentence classification on token ids.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: unused (text has no channels); accepted like every zoo factory.
        image_size: the token length of the inputs (recorded only).
        pretrained: load the weights from ``folder`` (False: random weights of ``config``).
        folder: a folder with ``config.json``, ``model.safetensors`` and the tokenizer files; its
            ``config.json`` gives ``model_type`` and the options (``config`` may override them).
        model_type: the encoder kind when there is no folder (``bert``, ``roberta``, ``mpnet``,
            ``distilbert``).
        config: encoder options (over the folder's).
        train_bf16: bfloat16 autocast while training (None: when the hardware has it natively).

    Returns:
        An :class:`HFEncoder`.

    Raises:
        SafeReuseError: ``pretrained`` without a folder; a folder that is missing, unsafe or does not fit.

    Example:
        >>> m = hf_encoder(2, pretrained=False, model_type="distilbert", config={"dim": 16,
        ...     "n_layers": 1, "n_heads": 2, "hidden_dim": 32, "vocab_size": 40})
        >>> m.block_names()
        ['distilbert.embeddings', 'distilbert.transformer.layer.0', 'fc']
    """
    del in_channels
    if pretrained and folder is None and not on_meta():
        raise SafeReuseError(
            "hf-encoder needs the model folder to load", fix="pass -p folder=PATH (or pretrained=false)"
        )
    defaults: dict[str, Any] = {}
    weights_dir = None
    if folder is not None:  # an untrained copy of a folder's model still takes its kind and shape
        model_type, defaults = read_hf_config(folder)
        defaults["vocab_size"] = default_tokenizer().vocab_size  # the table is aligned to the data's
        weights_dir = folder if pretrained else None
    return HFEncoder(num_classes, model_type, config, weights_dir, image_size, train_bf16, defaults)


def with_text_recipes(factory: Any) -> Any:
    """Attach the text-encoder recipes to a zoo factory, where :mod:`safereuse.config` reads them:
    ``teacher_fit`` (:data:`TEXT_FIT`, for ``api.train_teacher``), ``student_fit`` and
    ``student_method_fit`` (:data:`TEXT_STUDENT_FIT`, :data:`TEXT_STUDENT_METHODS`, for
    ``api.transfer`` through ``config.student_params``).

    Args:
        factory: a model factory (a function).

    Returns:
        The same factory.

    Example:
        >>> f = with_text_recipes(lambda num_classes=2: None)
        >>> f.teacher_fit is TEXT_FIT, f.student_method_fit["remos"]["ratio"]
        (True, 0.1)
    """
    factory.teacher_fit = TEXT_FIT
    factory.student_fit = TEXT_STUDENT_FIT
    factory.student_method_fit = TEXT_STUDENT_METHODS
    return factory


with_text_recipes(hf_encoder)


#: The zoo entry a folder of each kind imports as by default (``hf-encoder`` takes any of them).
FOLDER_ARCH = {"bert": "minilm", "mpnet": "mpnet", "roberta": "hf-encoder", "distilbert": "hf-encoder"}


def build_from_folder(
    folder: str | Path, arch: str | None = None, num_classes: int = 2, max_len: int = 64
) -> tuple[HFEncoder, dict[str, Any]]:
    """A local Hugging Face encoder folder as a zoo model: the encoder (vocabulary aligned) from the
    folder, mean pooling, a new head.

    ``info`` records the folder's config (input vocabulary aligned) with ``pretrained=False``, so the
    artifact reloads without the folder.

    Args:
        folder: ``config.json``, ``model.safetensors`` and the tokenizer files.
        arch: ``minilm`` (BERT), ``mpnet`` (MPNet), ``hf-encoder`` (any); None: :data:`FOLDER_ARCH`.
        num_classes: outputs of the new head.
        max_len: the token length of the inputs.

    Returns:
        ``(model, record)``: the model (eval mode) and ``{"model_type", "vocabulary"}`` (the alignment
        counts of :func:`align_vocabulary`).

    Raises:
        SafeReuseError: an architecture that does not take this kind; missing, unsafe or unfit files.
    """
    kind, cfg = read_hf_config(folder)
    natural = FOLDER_ARCH[kind]
    arch = arch or natural
    if arch not in (natural, "hf-encoder"):
        raise SafeReuseError(
            f"{folder} is a {kind} folder, which imports as {natural} (or hf-encoder), not {arch}",
            fix=f"pass --arch {natural} (or leave --arch out)",
        )
    cfg = {**cfg, "vocab_size": default_tokenizer().vocab_size}  # the table is aligned to the data's
    kwargs: dict[str, Any] = {"pretrained": False, "config": cfg}
    if arch == "hf-encoder":
        kwargs["model_type"] = kind
    model = create_model(arch, num_classes=num_classes, image_size=max_len, **kwargs)
    assert isinstance(model, HFEncoder)
    model.vocabulary = model.load_folder(folder)
    return model.eval(), {"model_type": kind, "vocabulary": model.vocabulary}


__all__ = [
    "ENCODERS",
    "FOLDER_ARCH",
    "build_from_folder",
    "TEXT_FIT",
    "TEXT_STUDENT_FIT",
    "TEXT_STUDENT_METHODS",
    "with_text_recipes",
    "HFEncoder",
    "align_vocabulary",
    "encoder_options",
    "hf_encoder",
    "native_bf16",
    "on_meta",
    "read_hf_config",
    "read_hf_weights",
]
