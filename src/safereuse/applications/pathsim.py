"""EffectivePath's adversarial-input detector as Qiu et al. describe it (path similarity).

Qiu, Leng, Guo, Chen, Li, Guo, Zhu, "Adversarial Defense Through Network Profiling Based Path
Extraction", CVPR 2019 (arXiv:1904.08089): :class:`QiuPath` (registered as ``effectivepath``); its
docstring says what was taken from the paper and what from the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import SGDClassifier
from torch import nn
from tqdm.auto import tqdm

from ..defects.modality import make_attack
from ..device import model_device
from ..errors import SafeReuseError
from ..slicing.effective_path import positive_paths
from ..utils import analysis_mode
from .detect import DETECTORS, predicted, successful_adversarial
from .scored import ScoreDetector


@DETECTORS.register(
    "effectivepath", "EffectivePath's path similarity (Qiu et al. 2019; trained on attacks too)"
)
@dataclass
class QiuPath(ScoreDetector):
    """Qiu et al.'s EffectivePath detector, trained on benign and adversarial examples.

    What was taken from where. Sources: the paper (Qiu et al., CVPR 2019, arXiv:1904.08089), read
    through summaries of it (its full text was not reachable here), and the authors' code, which
    ships inside github.com/Ptolemy-DL/Ptolemy (``src/nninst``; the follow-up "Ptolemy", MICRO 2020):

    - **Per-input effective path** (paper; code ``nninst/utils/numpy.py::arg_approx`` and
      ``nninst/trace.py``): backward from the predicted output neuron, every neuron on the path keeps
      the smallest set of its largest inputs ``w_i x_i`` whose sum reaches ``θ_EP`` (paper and code:
      0.5) of the summed ``w_i x_i`` — positive terms only. Implemented by
      :func:`safereuse.slicing.effective_path.positive_paths`, **at channel granularity** (a conv
      synapse is a kernel slice, a neuron a channel), not per weight and position as in the paper: a
      per-position walk of every training input is out of this machine's CPU budget.
    - **Per-class paths** (paper; code ``reconstruct_trace_from_tf`` keeps only correctly classified
      training images, ``merge_compact_trace`` is a bitwise OR): the union of the paths of the
      correctly classified benign training inputs of each class. ``min_share > 0`` keeps only the
      synapses on more than that share of the class's paths (not in the paper; 0 = the union).
    - **Similarity** (paper; code ``nninst/statistics.py::calc_trace_side_overlap_both_compact``):
      per weighted layer, ``|P(x) ∩ P_c| / |P(x)|``, the share of the input's path synapses that lie
      in the class path (0 for an empty path). *Rank 1*: the path from the model's class ``c₁``
      against ``P_{c₁}``; *rank 2*: the path started from the runner-up logit ``c₂`` against
      ``P_{c₂}`` (code ``real_metrics_per_layer_per_rank``: the seed is the rank-th highest logit).
    - **Detector** (paper: a linear model ``Σ_l ω_l J_l − Σ_l ω'_l J'_l`` on the per-layer rank-1
      and rank-2 similarities against a threshold, also random forest, AdaBoost, gradient boosting;
      code ``nninst/plot/plot_auc.py``): ``SGDClassifier(loss="hinge", penalty="elasticnet",
      l1_ratio=0.5, fit_intercept=False)`` fitted on the similarities of benign (−1) **and
      adversarial** (+1) examples. Only the linear model is here (the others' fitted state cannot be
      saved without pickles). The score is its decision value; the threshold comes from
      :class:`~safereuse.applications.scored.ScoreDetector`'s benign calibration (the paper reports
      ROC-AUC, with no operating point).

    The adversarial examples are crafted inside :meth:`learn` with ``attack`` (default FGSM,
    ε = 8/255) on the correctly classified inputs of a held-back share (``detector_share``) of the
    benign training inputs, keeping those that fool the model; the class paths come from the rest,
    so the classifier sees benign inputs whose paths are not in the class paths already (the
    authors' code: class paths from the training set, the classifier on test images).

    Args:
        share: ``θ_EP``, the share of a neuron's summed input its path inputs reach (paper: 0.5).
        min_share: a synapse is in a class path when it lies on at least this share of the class's
            training paths (0: on any, the paper's union).
        detector_share: the share of the benign inputs given to :meth:`learn` held back from the
            class paths to train the linear model (benign examples, and the sources of the
            adversarial ones).
        attack: the attack crafting the adversarial training examples (a name of
            :func:`safereuse.defects.modality.make_attack`).
        eps: its ``eps`` parameter (None: the attack's default).
        alpha: the linear model's regularisation strength (scikit-learn's default 1e-4).
        fpr, calibration, batch_size, seed: see :class:`~safereuse.applications.scored.ScoreDetector`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
        >>> x = torch.randn(300, 1, 4, 4)
        >>> det = QiuPath(eps=0.3).fit(net, x, progress=False)
        >>> det.detect(net, x[:5]).flags.shape, len(det.layers)
        (torch.Size([5]), 2)
    """

    #: the default; ``info["trained_on"]`` names the attack a fitted detector was trained with
    trained_on: ClassVar[str] = "benign inputs + FGSM 8/255 examples crafted on them"
    share: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_share: Annotated[float, Field(ge=0, lt=1)] = 0.0
    detector_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    attack: str = "fgsm"
    eps: Annotated[float, Field(gt=0)] | None = 8 / 255
    alpha: Annotated[float, Field(gt=0)] = 1e-4

    def __post_init__(self) -> None:
        self.layers: list[str] = []
        self.paths: dict[str, torch.Tensor] = {}  # layer → [K, C_out, C_in] uint8 class paths
        self.coef = torch.zeros(0)

    # -- the parts ---------------------------------------------------------------------------
    def class_paths(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
        """Aggregate the paths of the inputs ``x`` whose model class is their label ``y`` into one
        path per class (``self.paths``): the union, or the synapses on ≥ ``min_share`` of them."""
        ok = predicted(model, x, self.batch_size).cpu() == y.cpu()
        xs, ys = x[ok.to(x.device)], y.cpu()[ok]
        if len(xs) == 0:
            raise SafeReuseError(
                "no benign input is classified correctly", fix="give labelled training inputs"
            )
        r = positive_paths(model, xs, share=self.share, criterion=ys, batch_size=self.batch_size)
        counts = torch.bincount(ys, minlength=n_classes).float()
        self.layers = list(r.layers)
        self.paths = {}
        for k in self.layers:
            s = r.synapse[k].float()
            per = torch.zeros(n_classes, *s.shape[1:]).index_add_(0, ys, s)
            need = (self.min_share * counts).view(-1, *([1] * (s.dim() - 1)))
            self.paths[k] = ((per > need) & (per > 0)).to(torch.uint8)

    def similarities(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``[N, 2L]``: the per-layer rank-1 similarities, then the rank-2 ones."""
        if not self.layers:
            raise SafeReuseError("the detector has no class paths", fix="call fit() or load() first")
        cols = []
        for rank in (1, 2):
            r = positive_paths(model, x, share=self.share, rank=rank, batch_size=self.batch_size)
            seed = torch.tensor(r.meta["seed"], dtype=torch.long)
            for k in self.layers:
                p = r.synapse[k].bool()
                cls = self.paths[k][seed].bool()
                size = p.flatten(1).sum(1).float()
                inter = (p & cls).flatten(1).sum(1).float()
                cols.append(torch.where(size > 0, inter / size.clamp(min=1), torch.zeros_like(size)))
        return torch.stack(cols, 1)

    def _features(self, model: nn.Module, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        chunk = self.batch_size * 8
        steps = tqdm(range(0, len(x), chunk), desc="effectivepath", disable=not progress, leave=False)
        out = [self.similarities(model, x[i : i + chunk]) for i in steps]
        return torch.cat(out) if out else torch.zeros(0, 2 * len(self.layers))

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``attack`` crafted on the inputs of ``x`` the model classifies as ``y``; the successful ones."""
        atk = make_attack(self.attack, {} if self.eps is None else {"eps": self.eps}, model)
        return successful_adversarial(atk, model, x, y, batch_size=self.batch_size, seed=self.seed)[0]

    # -- ScoreDetector -----------------------------------------------------------------------
    def learn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> None:
        """Class paths from ``1 − detector_share`` of ``x``; the linear model on the similarities
        of the rest (benign, −1) and of the attack crafted on them (adversarial, +1)."""
        with analysis_mode(model):  # every logit can seed a rank-2 path: one class path each
            n_classes = max(int(y.max()) + 1, int(model(x[:1].to(model_device(model))).shape[1]))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed + 1))
        n_det = min(len(x) - 1, max(1, round(self.detector_share * len(x))))
        det, prof = order[:n_det], order[n_det:]
        self.class_paths(model, x[prof], y[prof], n_classes)
        adv = self.adversarial(model, x[det], y[det])
        if len(adv) == 0:
            raise SafeReuseError(
                f"the attack {self.attack!r} fooled the model on none of {len(det)} inputs, so the "
                "detector has no adversarial example to learn from",
                fix="raise eps or choose a stronger attack",
            )
        fb, fa = self._features(model, x[det], progress), self._features(model, adv, progress)
        feats = torch.cat([fb, fa]).double().numpy()
        labels = np.concatenate([-np.ones(len(fb)), np.ones(len(fa))])
        clf = SGDClassifier(
            loss="hinge", penalty="elasticnet", l1_ratio=0.5, alpha=self.alpha, max_iter=10000, tol=1e-4,
            fit_intercept=False, random_state=self.seed,
        )  # fmt: skip
        clf.fit(feats, labels)
        self.coef = torch.from_numpy(clf.coef_[0].copy()).float()
        self.info_learn = {"n_class_path_inputs": len(prof), "n_benign_examples": len(fb),
                           "n_adversarial_examples": len(fa)}  # fmt: skip

    def fit(self, model: nn.Module, x: torch.Tensor, *, labels: torch.Tensor | None = None,
            progress: bool = True) -> QiuPath:  # fmt: skip
        """:meth:`ScoreDetector.fit`, recording the attack and the example counts of :meth:`learn` in
        ``info``."""
        super().fit(model, x, labels=labels, progress=progress)
        eps = "" if self.eps is None else f" eps={self.eps:.4g}"
        self.info.update(getattr(self, "info_learn", {}))
        self.info["trained_on"] = f"benign inputs + {self.attack}{eps} examples crafted on them"
        return self

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The linear model's decision value on the rank-1 / rank-2 similarities (``y``: unused, the
        paths start from the model's own first and second classes)."""
        return self._features(model, x) @ self.coef

    def state(self) -> dict[str, torch.Tensor]:  # noqa: D102 - see ScoreDetector.state
        out = {"coef": self.coef}
        for i, k in enumerate(self.layers):
            out[f"path.{i:04d}.{k}"] = self.paths[k]
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.coef = tensors["coef"].float()
        keys = sorted(k for k in tensors if k.startswith("path."))
        self.layers = [k.split(".", 2)[2] for k in keys]
        self.paths = {k.split(".", 2)[2]: tensors[k].to(torch.uint8) for k in keys}


__all__ = ["QiuPath"]
