"""Adversarial-input detection from slices (NNSlicer's first application) and its two baselines.

Zhang, Li, Guo, Chen, Liu. "Dynamic Slicing for Deep Neural Networks", ESEC/FSE 2020 (spec
``nnslicer.md``, "Applications" 1): slice every benign training input with its predicted class as the
criterion, learn a decision tree from the slice vectors to that class, and flag a test input as
adversarial when the tree's class differs from the model's prediction. No adversarial example is
used for training and the model is not changed. The detection score (for ROC-AUC) is
``1 − P_tree(model's class)``.

What the tree sees is the feature extractor of a criterion object
(:data:`~safereuse.applications.criteria.CRITERIA`; extractors in :mod:`.features`):

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
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..defects.cache import craft_batched
from ..device import model_device
from ..errors import SafeReuseError
from ..metrics import detection_summary
from ..params import Validated, unknown_param_error
from ..registry import Registry
from ..train import predict_labels
from ..utils import analysis_mode, atomic_path, weights_hash
from .criteria import loose_params, make_criterion
from .tree import TreeArrays

DETECTOR_FORMAT = "safereuse-slice-detector/1"

#: Every detector by name: what ``--detector``, a spec's ``detectors`` and :func:`make_detector` accept.
#: Each entry is a class with ``from_params(**params)``, ``param_names()``, ``fit``, ``detect``,
#: ``save`` and a ``trained_on`` line.
DETECTORS: Registry[Any] = Registry("detector", "safereuse list detectors")

#: The default attack points of the detection experiment: ``(label, defect name, params)``. The
#: paper (spec ``nnslicer.md``, "Applications" 1) uses 17 attacks; these are the ones safereuse has,
#: all defects of :data:`safereuse.defects.DEFECTS` (the extra ones in :mod:`safereuse.defects.evasion`).
PAPER_ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    ("fgsm-2", "fgsm", {"eps": 2 / 255}),
    ("fgsm-4", "fgsm", {"eps": 4 / 255}),
    ("fgsm-8", "fgsm", {"eps": 8 / 255}),
    ("pgd-2", "pgd", {"eps": 2 / 255, "steps": 10}),
    ("pgd-4", "pgd", {"eps": 4 / 255, "steps": 10}),
    ("pgd-8", "pgd", {"eps": 8 / 255, "steps": 10}),
    ("deepfool-l2", "deepfool", {}),
    ("deepfool-linf", "deepfool-linf", {}),
    ("cw-l2", "cw", {"norm": "l2"}),
    ("penultimate", "penultimate", {}),
    ("jsma", "jsma", {}),
    ("boundary", "boundary", {}),
    ("spatial", "spatial", {}),
    ("pixel", "pixel", {}),
    ("gaussian-noise", "gaussian-noise", {}),
    ("gaussian-blur", "gaussian-blur", {}),
]

#: Attacks that take seconds per input on a CPU (iterative minimal-perturbation, saliency and
#: decision-based searches): the detection experiment can craft them from fewer sources.
SLOW_ATTACKS: frozenset[str] = frozenset({"cw", "deepfool", "deepfool-linf", "jsma", "boundary", "pixel"})


def model_fingerprint(model: nn.Module) -> str:
    """Content hash of the model's weights and buffers (a detector only fits the model it was fit on)."""
    return weights_hash(model, 16)


def check_fitted(state: Any, fingerprint: str, model: nn.Module) -> Any:
    """What a detector learnt (``state``), checked to exist and to belong to ``model``.

    Raises:
        SafeReuseError: not fitted (``state`` is None), or fitted on a model with other weights.
    """
    if state is None:
        raise SafeReuseError("the detector is not fitted", fix="call fit() or load() first")
    if fingerprint and model_fingerprint(model) != fingerprint:
        raise SafeReuseError(
            "the detector was fitted on another model (weights differ)",
            fix="use it with the model it was fitted on, or fit it again",
        )
    return state


def successful_adversarial(
    attack: Any,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    limit: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``attack`` crafted from the inputs of ``x`` the model classifies as their label ``y`` (the first
    ``limit`` of them), keeping the examples that fool it — the adversarial set of every detection
    study here.

    Returns:
        ``(adversarial inputs, their source labels, number of sources crafted from)``.

    Example:
        >>> from safereuse.defects.modality import make_attack
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)
        >>> xa, ya, n = successful_adversarial(make_attack("fgsm", {"eps": 1.0}, net), net, x, y)
        >>> n == int((predicted(net, x) == y).sum()) and bool((predicted(net, xa) != ya).all())
        True
    """
    ok = predicted(model, x, batch_size) == y.cpu()
    sx, sy = x[ok.to(x.device)][:limit], y.cpu()[ok][:limit]
    if len(sx) == 0:
        return sx, sy, 0
    xa = craft_batched(attack, model, sx, sy, batch_size, seed=seed)
    fooled = predicted(model, xa, batch_size) != sy
    return xa[fooled], sy[fooled], len(sx)


def predicted(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's class for every input (eval mode, flags restored), on the CPU (empty-safe)."""
    return predict_labels(model, x, batch_size)


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
class SliceDetector(Validated):
    """A decision tree from slice (or baseline) vectors to the model's class; flags disagreements.

    Args:
        criterion: what the tree sees (:data:`~safereuse.applications.criteria.CRITERIA`):
            ``nnslicer``, ``featuremap`` or ``effectivepath``; an object, a name or
            ``{"name": "nnslicer", "theta": 0.3}``.
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

    #: what the detector needs in training (recorded with every result)
    trained_on: ClassVar[str] = "benign inputs only"
    # Any: a Criterion, a name or a mapping; made a Criterion in __post_init__ (make_criterion checks it)
    criterion: Any = "nnslicer"
    max_depth: Annotated[int, Field(ge=1)] | None = None
    min_samples_leaf: Annotated[int, Field(ge=1)] = 1
    max_features: int | float | str | None = None
    batch_size: Annotated[int, Field(ge=1)] = 256
    seed: int = 0
    tree: TreeArrays | None = field(default=None, repr=False)
    fingerprint: str = field(default="", repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def _what(self) -> str:
        return "detector"

    def __post_init__(self) -> None:
        self.criterion = make_criterion(self.criterion, use="detects", what="detector")
        self._features = self.criterion.features()

    @classmethod
    def param_names(cls) -> set[str]:
        """The parameters :meth:`from_params` takes: the tree's and every criterion's loose ones."""
        return (
            {f.name for f in fields(cls) if f.init} - {"criterion", "tree", "fingerprint", "info"}
        ) | loose_params()

    @classmethod
    def from_params(cls, criterion: Any = None, **params: Any) -> SliceDetector:
        """Build from a criterion (default: the class's) plus flat parameters, the loose criterion
        ones (``theta``, ``path_share``) included: the old form of ``--detector-param``, of a spec's
        ``detector_params`` and of a saved detector's config (``features`` = the criterion's name).

        Example:
            >>> SliceDetector.from_params(features="effectivepath", theta=0.3, path_share=0.4).criterion
            EffectivePath(path_share=0.4)
        """
        params.pop("detector", None)  # the registered name a saved config records
        criterion = params.pop("features", criterion)
        if criterion is None:
            criterion = cls.__dataclass_fields__["criterion"].default
        loose_names = loose_params()
        loose = {k: params.pop(k) for k in list(params) if k in loose_names}
        accepted = cls.param_names() - loose_names
        for key in params:
            if key not in accepted:
                raise unknown_param_error("detector", key, accepted | loose_names)
        return cls(make_criterion(criterion, loose, use="detects", what="detector"), **params)

    def config(self) -> dict[str, Any]:
        """The hyper-parameters (recorded with every result): the criterion's name as ``features``
        and its parameters, then the tree's (flat, the form recorded before criteria were objects)."""
        own = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("criterion", "tree", "fingerprint", "info")}  # fmt: skip
        registered = {"detector": self.name} if getattr(self, "name", None) else {}
        return {**registered, "features": self.criterion.name, **self.criterion.params(), **own}

    def vectors(self, model: nn.Module, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """The tree's input for ``x``, computed ``batch_size`` at a time."""
        chunk = max(self.batch_size, 1) * 8
        steps = tqdm(range(0, len(x), chunk), desc=self.criterion.name, disable=not progress, leave=False)
        out = [self._features(model, x[i : i + chunk], self.batch_size) for i in steps]
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

    def fit(
        self, model: nn.Module, x: torch.Tensor, *, labels: torch.Tensor | None = None, progress: bool = True
    ) -> SliceDetector:
        """Fit on benign inputs: their vectors → the model's class.

        Args:
            model: the model to protect (not changed).
            x: benign (training) inputs.
            labels: not used: the paper's tree learns the model's class, not the label (the
                argument exists so every detector is fitted alike).
            progress: show a progress bar.

        Returns:
            ``self``, fitted.

        Raises:
            SafeReuseError: no inputs, or a class of the model that no benign input is predicted as.
        """
        if len(x) == 0:
            raise SafeReuseError("no benign input to fit the detector on", fix="give training inputs")
        t0 = time.perf_counter()
        y = predicted(model, x, self.batch_size)
        n_classes = benign_classes(model, x, y)
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
            "seconds_fit": t2 - t0,
        }
        return self

    def _check(self, model: nn.Module) -> TreeArrays:
        return check_fitted(self.tree, self.fingerprint, model)

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
        det = cls.from_params(**meta["config"])
        det.tree = TreeArrays.from_tensors(tensors, meta["n_features"])
        det._features.load_state(
            {k[len("features.") :]: v for k, v in tensors.items() if k.startswith("features.")}
        )
        det.fingerprint = meta.get("fingerprint", "")
        det.info = meta.get("info", {})
        return det


@DETECTORS.register(
    "nnslicer", "NNSlicer's detector as published: a tree on slice vectors (Zhang et al. 2020)"
)
@dataclass
class NNSlicerTree(SliceDetector):
    """The paper's detector: slice vectors under the model's class → a tree; flag disagreement."""

    criterion: Any = "nnslicer"


@DETECTORS.register("featuremap", "the paper's FeatureMap baseline: a tree on per-layer mean activations")
@dataclass
class FeatureMapTree(SliceDetector):
    """FeatureMap (the paper's baseline): mean activations of every layer but the logits → a tree."""

    criterion: Any = "featuremap"


@DETECTORS.register(
    "effectivepath-tree", "EffectivePath's binary paths fed to NNSlicer's tree (not Qiu et al.'s)"
)
@dataclass
class EffectivePathTree(SliceDetector):
    """EffectivePath's critical paths as NNSlicer's tree reads them (channel granularity)."""

    criterion: Any = "effectivepath"


def make_detector(name: str, params: dict[str, Any] | None = None, *, strict: bool = True) -> Any:
    """The detector ``name`` of :data:`DETECTORS` built from flat parameters.

    Args:
        name: a registered detector.
        params: its parameters.
        strict: refuse a parameter the detector does not take (False: leave it out, for parameters
            given to several detectors at once; :func:`make_detectors` checks each is taken by one).

    Raises:
        SafeReuseError: an unknown name, parameter or value.

    Example:
        >>> make_detector("featuremap", {"max_depth": 3}).max_depth
        3
    """
    cls = DETECTORS.get(name)
    params = dict(params or {})
    if not strict:
        params = {k: v for k, v in params.items() if k in cls.param_names()}
    return cls.from_params(**params)


def make_detectors(names: Any, params: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Every detector of ``names`` with the shared ``params`` (each takes the ones it has) and ``seed``.

    Raises:
        SafeReuseError: an unknown detector, or a parameter none of them takes.

    Example:
        >>> sorted(make_detectors(["featuremap", "mahalanobis"], {"max_depth": 2}))
        ['featuremap', 'mahalanobis']
    """
    params = dict(params or {})
    names = list(names)
    classes = [DETECTORS.get(n) for n in names]
    taken = set().union(*(c.param_names() for c in classes)) if classes else set()
    for key in params:
        if key not in taken:
            raise unknown_param_error(f"detectors {', '.join(names)}", key, taken)
    return {n: make_detector(n, {**params, "seed": seed}, strict=False) for n in names}


def load_detector(path: str | Path) -> Any:
    """Read any saved detector (a tree detector or a score detector).

    Raises:
        SafeReuseError: a missing, foreign or corrupt detector directory.
    """
    path = Path(path)
    try:
        meta = json.loads((path / "detector.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SafeReuseError(
            f"cannot read a detector from {path}: {exc}", fix="pass a saved detector"
        ) from None
    name = meta.get("config", {}).get("detector") if isinstance(meta, dict) else None
    if meta.get("format") == DETECTOR_FORMAT or name is None:
        return (DETECTORS.get(name) if name else SliceDetector).load(path)
    try:
        tensors = load_file(str(path / "detector.safetensors"))
    except OSError as exc:
        raise SafeReuseError(
            f"cannot read a detector from {path}: {exc}", fix="pass a saved detector"
        ) from None
    return DETECTORS.get(name).load_saved(meta, tensors)


def benign_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """The model's number of classes, checked to occur among ``y`` (the model's classes of the benign
    inputs ``x``): a detector cannot learn a class it never sees.

    Raises:
        SafeReuseError: a class no benign input is predicted as.
    """
    n_classes = int(_num_classes(model, x))
    counts = torch.bincount(y, minlength=n_classes)
    missing = [c for c in range(n_classes) if counts[c] == 0]
    if missing:
        raise SafeReuseError(
            f"none of the {len(x)} benign inputs is predicted as class {missing[0]}, so the detector "
            "cannot learn that class",
            fix="give more benign inputs (every class of the model must occur)",
        )
    return n_classes


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with analysis_mode(model):
        return int(model(x[:1].to(model_device(model))).shape[1])


# -- metrics ---------------------------------------------------------------------------------------
def detection_metrics(
    benign: Detection | tuple[torch.Tensor, torch.Tensor],
    adversarial: Detection | tuple[torch.Tensor, torch.Tensor],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall, precision, F1 and ROC-AUC of a detector on benign (negative) and adversarial (positive)
    inputs, with counts and 95 % intervals.

    The statistics are :func:`safereuse.metrics.detection_summary`'s: recall (``tp / adversarial``)
    and precision (``tp / flagged``) with Wilson intervals (percent); F1 and AUC (fractions) with a
    percentile bootstrap (``scipy.stats.bootstrap``) over ``n_boot`` resamples of the benign and
    adversarial sets (each resampled on its own, seed ``seed``).

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
    return detection_summary(fb, sb, fa, sa, n_boot=n_boot, seed=seed)


__all__ = [
    "DETECTORS",
    "DETECTOR_FORMAT",
    "EffectivePathTree",
    "FeatureMapTree",
    "NNSlicerTree",
    "benign_classes",
    "check_fitted",
    "successful_adversarial",
    "load_detector",
    "make_detector",
    "make_detectors",
    "PAPER_ATTACKS",
    "SLOW_ATTACKS",
    "Detection",
    "SliceDetector",
    "detection_metrics",
    "model_fingerprint",
    "predicted",
]
