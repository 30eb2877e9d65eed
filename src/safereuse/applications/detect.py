"""Adversarial-input detection from slices (NNSlicer's first application) and its two baselines.

Zhang, Li, Guo, Chen, Liu. "Dynamic Slicing for Deep Neural Networks", ESEC/FSE 2020 (spec
``nnslicer.md``, "Applications" 1): slice every benign training input with its predicted class as the
criterion, learn a decision tree from the slice vectors to that class, and flag a test input as
adversarial when the tree's class differs from the model's prediction. No adversarial example is
used for training and the model is not changed. The detection score (for ROC-AUC) is
``1 − P_tree(model's class)``.

What the tree sees is an injected feature extractor (:data:`FEATURES`):

- ``nnslicer`` — every synapse contribution of the input's slice (:meth:`SliceResult.vector`),
  reference = the profiled mean of the benign training inputs — minus the output layer's, which
  only spell out the criterion (the predicted class) and would let the tree copy the model;
- ``featuremap`` — the paper's FeatureMap baseline: the mean activation of every channel / unit of
  every conv and linear layer (:func:`safereuse.slicing.capture`);
- ``effectivepath`` — the paper's EffectivePath baseline: the binary critical path of the input
  (Qiu et al., CVPR 2019; :mod:`safereuse.slicing.effective_path`), output layer left out likewise.

:class:`SliceDetector` (verbs :meth:`~SliceDetector.fit`, :meth:`~SliceDetector.detect`) is saved as
safetensors + JSON (:meth:`~SliceDetector.save`, :meth:`~SliceDetector.load`; the tree as its arrays,
:class:`~safereuse.applications.tree.TreeArrays`) and works as a filter:
``x[~detector.detect(model, x).flags]``. :func:`detection_metrics` scores a detector on benign and
adversarial inputs (recall, precision, F1, ROC-AUC, counts, 95 % intervals).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import SafeReuseError
from ..metrics import rate
from ..params import validate_fields
from ..registry import Registry
from ..utils import atomic_path, tensor_hash
from .tree import TreeArrays

DETECTOR_FORMAT = "safereuse-slice-detector/1"


# -- feature extractors ----------------------------------------------------------------------------
class Features:
    """How an input becomes the tree's vector. ``prepare`` once on the benign training inputs, then
    ``__call__`` per batch; ``state``/``load_state`` carry what ``prepare`` learnt (tensors only)."""

    def prepare(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> None:  # noqa: B027
        """Learn what the extractor needs from the benign training inputs (default: nothing)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore :meth:`state`."""


FEATURES: Registry[type[Features]] = Registry("detector", "safereuse slice detect --help")


@FEATURES.register("nnslicer", "NNSlicer: all synapse contributions of the input's slice")
class SliceFeatures(Features):
    """All synapse contributions of each input's slice, criterion = its predicted class."""

    def __init__(self, theta: float = 0.3, **_: Any) -> None:
        self.theta = theta
        self.means: dict[str, torch.Tensor] = {}

    def _slicer(self) -> Any:
        from ..slicing import Slicer

        return Slicer(theta=self.theta, reference="mean")

    def prepare(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
        s = self._slicer().profile(model, x, batch_size=batch_size)
        self.means = {k: v.detach().cpu() for k, v in s.means.items()}

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        s = self._slicer()
        s.means = {k: v.to(_device(model)) for k, v in self.means.items()}
        r = s.slice(model, x, criterion="predicted", per_input=True, batch_size=batch_size)
        return _body_vector(r)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"means.{k}": v for k, v in self.means.items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.means = {k[len("means.") :]: v for k, v in tensors.items() if k.startswith("means.")}


def _body_vector(r: Any) -> torch.Tensor:
    """The synapse contributions of every layer but the output layer, flattened ``[N, D]``.

    With the predicted class ``k`` as the criterion only row ``k`` of the output layer is non-zero, so
    its synapses spell out the criterion: a tree would read the model's class back from them and
    never disagree with the model. They are left out.
    """
    layers = r.layers[:-1] if len(r.layers) > 1 else r.layers
    return torch.cat([r.synapse[k].flatten(1).float() for k in layers], dim=1).cpu()


@FEATURES.register("effectivepath", "EffectivePath (Qiu et al. 2019): the binary critical path")
class PathFeatures(Features):
    """The binary critical path of each input (synapse on the path = 1)."""

    def __init__(self, path_share: float = 0.5, **_: Any) -> None:
        self.path_share = path_share

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        from ..slicing.effective_path import effective_paths

        r = effective_paths(model, x, share=self.path_share, per_input=True, batch_size=batch_size)
        return (_body_vector(r) != 0).float()


@FEATURES.register("featuremap", "FeatureMap: per-layer mean activations (channel means)")
class FeatureMapFeatures(Features):
    """Mean activation of every channel (conv) / unit (linear) of every weighted layer."""

    def __init__(self, **_: Any) -> None:
        pass

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        from ..slicing import capture
        from .synapses import weighted_layers

        layers = weighted_layers(model, include_head=True)
        dev = _device(model)
        out = []

        def reduce(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).mean(2) if t.dim() > 2 else t

        with _eval(model), torch.no_grad(), capture(model, layers, reduce=reduce) as cap:
            for i in range(0, len(x), batch_size):
                cap.clear()
                model(x[i : i + batch_size].to(dev))
                out.append(torch.cat([v.float().cpu() for v in cap.outputs()], 1))
        return torch.cat(out) if out else torch.empty(0, 0)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class _eval:
    """Eval mode inside ``with``; every module's ``training`` flag restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.flags = {m: m.training for m in self.model.modules()}
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for m, f in self.flags.items():
            m.training = f


def model_fingerprint(model: nn.Module) -> str:
    """Content hash of the model's weights and buffers (a detector only fits the model it was fit on)."""
    return tensor_hash(dict(model.state_dict()), 16)


def predicted(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's class for every input (eval mode, flags restored), on the CPU."""
    from ..train import predict

    if len(x) == 0:  # e.g. an attack without one successful example
        return torch.empty(0, dtype=torch.long)
    return predict(model, x, batch_size).argmax(1)


# -- the detector ----------------------------------------------------------------------------------
@dataclass
class Detection:
    """What :meth:`SliceDetector.detect` says about a batch.

    Attributes:
        flags: ``[N]`` bool, True = flagged adversarial (tree's class ≠ model's class).
        scores: ``[N]`` float, ``1 − P_tree(model's class)`` (higher = more suspicious).
        tree_class: ``[N]`` the tree's class.
        model_class: ``[N]`` the model's class.
    """

    flags: torch.Tensor
    scores: torch.Tensor
    tree_class: torch.Tensor
    model_class: torch.Tensor

    @classmethod
    def decide(cls, proba: torch.Tensor, model_class: torch.Tensor) -> Detection:
        """The detection rule: flag where the tree's class (argmax of ``proba`` ``[N, C]``) differs
        from ``model_class`` ``[N]``; score ``1 − proba[model_class]``.

        Example:
            >>> d = Detection.decide(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
            >>> d.flags.tolist(), [round(v, 2) for v in d.scores.tolist()]
            ([False, True], [0.1, 0.7])
        """
        t = proba.argmax(1)
        score = 1.0 - proba.gather(1, model_class.view(-1, 1).to(proba.device)).squeeze(1)
        return cls(t != model_class.to(t.device), score.float(), t, model_class)


@dataclass
class SliceDetector:
    """A decision tree from slice (or baseline) vectors to the model's class; flags disagreements.

    Args:
        features: ``nnslicer``, ``featuremap`` or ``effectivepath`` (:data:`FEATURES`).
        theta: NNSlicer's θ (``nnslicer``).
        path_share: EffectivePath's share of a neuron's value (``effectivepath``; the paper's 0.5).
        max_depth: the tree's depth limit (None: grown until pure).
        min_samples_leaf: the tree's smallest leaf.
        max_features: features tried per split (None: all; ``sqrt``; an int or a fraction).
        batch_size: inputs sliced at a time.
        seed: the tree's ``random_state``.

    Example:
        >>> det = SliceDetector("featuremap", max_depth=3)
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> _ = net[0].weight.data.copy_(torch.eye(3, 4)), net[0].bias.data.zero_()
        >>> x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
        >>> _ = det.fit(net, x, progress=False)
        >>> d = det.detect(net, x)
        >>> d.flags.shape, bool((d.scores >= 0).all())
        (torch.Size([60]), True)
    """

    param_ranges: ClassVar[dict[str, str]] = {
        "theta": "[0, 1)",
        "path_share": "(0, 1]",
        "max_depth": ">= 1",
        "min_samples_leaf": ">= 1",
        "batch_size": ">= 1",
    }
    features: str = "nnslicer"
    theta: float = 0.3
    path_share: float = 0.5
    max_depth: int | None = None
    min_samples_leaf: int = 1
    max_features: int | float | str | None = None
    batch_size: int = 256
    seed: int = 0
    tree: TreeArrays | None = field(default=None, repr=False)
    fingerprint: str = field(default="", repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        validate_fields(self, "detector")
        self._features = FEATURES.get(self.features)(theta=self.theta, path_share=self.path_share)

    def config(self) -> dict[str, Any]:
        """The hyper-parameters (recorded with every result)."""
        return {k: v for k, v in asdict(self).items() if k not in ("tree", "fingerprint", "info")}

    def vectors(self, model: nn.Module, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """The tree's input for ``x``, computed ``batch_size`` at a time."""
        chunk = max(self.batch_size, 1) * 8
        out = [
            self._features(model, x[i : i + chunk], self.batch_size)
            for i in tqdm(range(0, len(x), chunk), desc=self.features, disable=not progress, leave=False)
        ]
        return torch.cat(out) if out else torch.empty(0, 0)

    def prepare(self, model: nn.Module, x: torch.Tensor) -> SliceDetector:
        """Learn what the feature extractor needs from benign inputs (NNSlicer: their mean behaviour,
        the slices' reference), without fitting the tree: :meth:`vectors` works after it, so vectors
        can be computed once and trees fitted on subsets of them (:meth:`TreeArrays.fit`).

        Returns:
            ``self``.
        """
        self._features.prepare(model, x, self.batch_size)
        return self

    def fit(self, model: nn.Module, x: torch.Tensor, *, progress: bool = True) -> SliceDetector:
        """Fit on benign inputs: their vectors → the model's class.

        Args:
            model: the model to protect (not changed).
            x: benign (training) inputs.
            progress: show a progress bar.

        Returns:
            ``self``, fitted.

        Raises:
            SafeReuseError: no inputs, or a class of the model that no benign input is predicted as.
        """
        import time

        if len(x) == 0:
            raise SafeReuseError("no benign input to fit the detector on", fix="give training inputs")
        t0 = time.perf_counter()
        y = predicted(model, x, self.batch_size)
        n_classes = int(_num_classes(model, x))
        counts = torch.bincount(y, minlength=n_classes)
        missing = [c for c in range(n_classes) if counts[c] == 0]
        if missing:
            raise SafeReuseError(
                f"none of the {len(x)} benign inputs is predicted as class {missing[0]}, so the detector "
                "cannot learn that class's slices",
                fix="give more benign inputs (every class of the model must occur)",
            )
        self.prepare(model, x)
        v = self.vectors(model, x, progress)
        t1 = time.perf_counter()
        self.tree = TreeArrays.fit(
            v, y, n_classes, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, seed=self.seed,
        )  # fmt: skip
        t2 = time.perf_counter()
        self.fingerprint = model_fingerprint(model)
        self.info = {
            "n_train": len(x),
            "n_features": int(v.shape[1]),
            "n_classes": n_classes,
            "tree_nodes": len(self.tree.feature),
            "tree_depth": self.tree.depth,
            "train_agreement": float((self.tree.predict(v) == y).float().mean()),
            "seconds_vectors": t1 - t0,
            "seconds_tree": t2 - t1,
        }
        return self

    def _check(self, model: nn.Module) -> TreeArrays:
        if self.tree is None:
            raise SafeReuseError("the detector is not fitted", fix="call fit() or load() first")
        if self.fingerprint and model_fingerprint(model) != self.fingerprint:
            raise SafeReuseError(
                "the detector was fitted on another model (weights differ)",
                fix="use it with the model it was fitted on, or fit it again",
            )
        return self.tree

    def detect(self, model: nn.Module, x: torch.Tensor, *, progress: bool = False) -> Detection:
        """Flag the inputs whose tree class differs from the model's class.

        Args:
            model: the model the detector was fitted on.
            x: inputs ``[N, ...]``.
            progress: show a progress bar.

        Returns:
            A :class:`Detection`.
        """
        tree = self._check(model)
        m = predicted(model, x, self.batch_size)
        return Detection.decide(tree.predict_proba(self.vectors(model, x, progress)), m)

    def filter(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The inputs of ``x`` the detector lets through (not flagged)."""
        return x[~self.detect(model, x).flags.to(x.device)]

    def save(self, path: str | Path) -> Path:
        """Write ``detector.safetensors`` (tree arrays, the extractor's state) and ``detector.json``
        into the directory ``path`` (created; replaced atomically file by file)."""
        from safetensors.torch import save_file

        if self.tree is None:
            raise SafeReuseError("the detector is not fitted", fix="call fit() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {**self.tree.tensors(), **{f"features.{k}": v for k, v in self._features.state().items()}}
        with atomic_path(path / "detector.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        meta = {"format": DETECTOR_FORMAT, "config": self.config(), "fingerprint": self.fingerprint,
                "n_features": self.tree.n_features, "info": self.info}  # fmt: skip
        with atomic_path(path / "detector.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SliceDetector:
        """Read a detector written by :meth:`save`.

        Raises:
            SafeReuseError: a missing, foreign or corrupt detector directory.
        """
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "detector.json").read_text())
            tensors = load_file(str(path / "detector.safetensors"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SafeReuseError(
                f"cannot read a detector from {path}: {exc}", fix="pass a saved detector"
            ) from None
        if meta.get("format") != DETECTOR_FORMAT:
            raise SafeReuseError(f"{path} is not a slice detector ({meta.get('format')})", fix="re-fit it")
        det = cls(**meta["config"])
        det.tree = TreeArrays.from_tensors(tensors, meta["n_features"])
        det._features.load_state(
            {k[len("features.") :]: v for k, v in tensors.items() if k.startswith("features.")}
        )
        det.fingerprint = meta.get("fingerprint", "")
        det.info = meta.get("info", {})
        return det


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with _eval(model), torch.no_grad():
        return int(model(x[:1].to(_device(model))).shape[1])


# -- metrics ---------------------------------------------------------------------------------------
def roc_auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """ROC-AUC = P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney).

    Example:
        >>> roc_auc(np.array([0.9, 0.5]), np.array([0.1, 0.5]))
        0.875
    """
    if len(scores_pos) == 0 or len(scores_neg) == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([scores_pos, scores_neg]))
    n1, n0 = len(scores_pos), len(scores_neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan


def detection_metrics(
    benign: Detection | tuple[torch.Tensor, torch.Tensor],
    adversarial: Detection | tuple[torch.Tensor, torch.Tensor],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall, precision, F1 and ROC-AUC of a detector on benign (negative) and adversarial (positive)
    inputs, with counts and 95 % intervals.

    Recall (``tp / adversarial``) and precision (``tp / flagged``) carry Wilson intervals
    (:func:`safereuse.metrics.rate`, percent); F1 and AUC (fractions) a percentile bootstrap over
    ``n_boot`` resamples of the benign and adversarial sets (each resampled on its own, seed ``seed``).

    Args:
        benign: the detection on benign inputs (or ``(flags, scores)``).
        adversarial: the detection on adversarial inputs.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        ``{"recall", "precision"}`` (Rate dicts), ``f1``, ``f1_ci``, ``auc``, ``auc_ci``, and the counts
        ``tp, fp, fn, tn, n_adversarial, n_benign``.

    Example:
        >>> b = (torch.tensor([False, False, True, False]), torch.tensor([0.0, 0.1, 0.8, 0.2]))
        >>> a = (torch.tensor([True, True, False]), torch.tensor([0.9, 0.7, 0.15]))
        >>> m = detection_metrics(b, a, n_boot=50)
        >>> (m["tp"], m["fp"], m["fn"], m["tn"]), round(m["recall"]["value"], 1), round(m["f1"], 3)
        ((2, 1, 1, 3), 66.7, 0.667)
        >>> round(m["auc"], 3)
        0.75
    """
    fb, sb = (benign.flags, benign.scores) if isinstance(benign, Detection) else benign
    fa, sa = (adversarial.flags, adversarial.scores) if isinstance(adversarial, Detection) else adversarial
    fb, fa = fb.bool().cpu().numpy(), fa.bool().cpu().numpy()
    sb, sa = sb.double().cpu().numpy(), sa.double().cpu().numpy()
    tp, fn = int(fa.sum()), int((~fa).sum())
    fp, tn = int(fb.sum()), int((~fb).sum())
    rng = np.random.default_rng(seed)
    f1s, aucs = [], []
    if len(fa) and len(fb):
        for _ in range(n_boot):
            ia = rng.integers(0, len(fa), len(fa))
            ib = rng.integers(0, len(fb), len(fb))
            t, f = int(fa[ia].sum()), int(fb[ib].sum())
            f1s.append(_f1(t, f, len(fa) - t))
            aucs.append(roc_auc(sa[ia], sb[ib]))

    def ci(v: list[float]) -> list[float | None]:
        v = [x for x in v if math.isfinite(x)]
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else [None, None]

    f1 = _f1(tp, fp, fn)
    auc = roc_auc(sa, sb)
    return {
        "recall": rate(tp, tp + fn).to_dict(),
        "precision": rate(tp, tp + fp).to_dict(),
        "f1": f1 if math.isfinite(f1) else None,
        "f1_ci": ci(f1s),
        "auc": auc if math.isfinite(auc) else None,
        "auc_ci": ci(aucs),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n_adversarial": tp + fn,
        "n_benign": fp + tn,
    }


__all__ = [
    "DETECTOR_FORMAT",
    "FEATURES",
    "Detection",
    "FeatureMapFeatures",
    "Features",
    "PathFeatures",
    "SliceDetector",
    "SliceFeatures",
    "detection_metrics",
    "model_fingerprint",
    "predicted",
    "roc_auc",
]
