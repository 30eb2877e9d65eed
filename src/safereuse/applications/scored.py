"""Detectors that score how unusual an input is and flag the scores above a benign-calibrated threshold.

NNSlicer's own detector (:class:`~safereuse.applications.detect.SliceDetector`) flags an input when a
tree's class disagrees with the model's, and the slice it reads is taken under the model's own class,
so the tree mostly repeats the model (``docs/results/nnslicer-applications.md``). The detectors here
are built the other way round: each learns what benign inputs look like (from benign training inputs
only, the model unchanged), scores every input (higher = more suspicious) and flags the scores above
the ``1 − fpr`` quantile of a held-back share of the benign inputs (``calibration``), so ``fpr`` is
the share of benign inputs it is meant to flag.

- :class:`SliceKNN` (``slice-knn``, the default of ``safereuse slice detect``): a deep-k-NN
  (Papernot & McDaniel 2018) in *slice space*. Each input is sliced with the criterion-independent
  ``penultimate`` criterion (every unit of the head's input, so no class template enters the vector),
  the synapse contributions are projected on their principal components, and the score is the number
  of the ``k`` nearest benign training slices whose label differs from the model's class (ties broken
  by the mean distance to them).
- :class:`Mahalanobis` (``mahalanobis``): Lee, Lee, Lee, Shin, "A Simple Unified Framework for
  Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018 — class-conditional
  Gaussians with one shared covariance on the penultimate features; the score is the smallest
  Mahalanobis distance to a class mean (no input preprocessing, no feature ensemble: those need
  adversarial or noisy examples to weigh).

A new score detector subclasses :class:`ScoreDetector` (fields = its parameters) and implements
:meth:`~ScoreDetector.learn`, :meth:`~ScoreDetector.score` and, if it keeps tensors,
:meth:`~ScoreDetector.state` / :meth:`~ScoreDetector.load_state`; it registers itself in
:data:`~safereuse.applications.detect.DETECTORS`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..device import model_device
from ..errors import SafeReuseError
from ..models.capture import capture
from ..params import Validated, check_value, unknown_param_error
from ..slicing import Slicer
from ..utils import analysis_mode, atomic_path
from .detect import DETECTORS, Detection, benign_classes, check_fitted, model_fingerprint, predicted
from .synapses import weighted_layers

SCORE_DETECTOR_FORMAT = "safereuse-score-detector/1"


@dataclass
class ScoreDetector(Validated):
    """Base of the score detectors (see the module docstring).

    Args:
        fpr: the share of benign inputs the threshold is set to flag (the ``1 − fpr`` quantile of the
            held-back benign scores), in (0, 1).
        calibration: the share of the benign inputs given to :meth:`fit` that is held back to set
            the threshold (the rest is learnt from).
        batch_size: inputs per forward pass / slice.
        seed: the seed of the calibration split.
    """

    name: ClassVar[str] = ""
    #: what the detector needs in training (recorded with every result)
    trained_on: ClassVar[str] = "benign inputs only"
    # 0.3: the validation choice (benchmarks/results/detect_select.json; F1 on balanced sets)
    fpr: Annotated[float, Field(gt=0, lt=1)] = 0.3
    calibration: Annotated[float, Field(gt=0, lt=1)] = 0.1
    batch_size: Annotated[int, Field(ge=1)] = 256
    seed: int = 0
    threshold: float | None = field(default=None, repr=False)
    fingerprint: str = field(default="", repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def _what(self) -> str:
        return f"detector {self.name!r}"

    def __post_init__(self) -> None:
        self.calibration_scores = torch.zeros(0, dtype=torch.float64)

    # -- what a subclass implements ------------------------------------------------------------
    def learn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> None:
        """Learn the benign statistics from inputs ``x`` and their classes ``y`` (true labels where
        :meth:`fit` was given them, else the model's)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N]`` float scores of ``x`` whose model classes are ``y`` (higher = more suspicious)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors :meth:`learn` produced (saved with the detector)."""
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`state`."""

    # -- shared --------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> set[str]:
        """The parameters :meth:`from_params` takes."""
        return {f.name for f in fields(cls) if f.init} - {"threshold", "fingerprint", "info"}

    @classmethod
    def from_params(cls, **params: Any) -> ScoreDetector:
        """Build from flat parameters (``--detector-param``, a spec's ``detector_params``).

        Raises:
            SafeReuseError: an unknown parameter or an invalid value.
        """
        accepted = cls.param_names()
        for key in params:
            if key not in accepted:
                raise unknown_param_error(f"detector {cls.name!r}", key, accepted)
        return cls(**params)

    def config(self) -> dict[str, Any]:
        """``{"detector": name, **parameters}`` (recorded with every result)."""
        return {"detector": self.name, **{k: getattr(self, k) for k in sorted(self.param_names())}}

    def fit(
        self, model: nn.Module, x: torch.Tensor, *, labels: torch.Tensor | None = None, progress: bool = True
    ) -> ScoreDetector:
        """Learn from benign inputs and set the threshold on a held-back share of them.

        Args:
            model: the model to protect (not changed).
            x: benign (training) inputs; every class of the model must be predicted on some.
            labels: their true labels, where known (what the benign statistics are grouped by);
                default: the model's classes.
            progress: show progress bars.

        Returns:
            ``self``, fitted.

        Raises:
            SafeReuseError: too few inputs, or a class no benign input is predicted as.
        """
        if len(x) < 4:
            raise SafeReuseError(
                f"{len(x)} benign inputs are too few to fit and calibrate a detector",
                fix="give at least a few hundred benign training inputs",
            )
        t0 = time.perf_counter()
        y = predicted(model, x, self.batch_size)
        n_classes = benign_classes(model, x, y)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_cal = min(len(x) - 2, max(2, round(self.calibration * len(x))))
        cal, own = order[:n_cal], order[n_cal:]
        known = y if labels is None else labels.to(y.device).long()
        if len(known) != len(x):
            raise SafeReuseError(f"{len(known)} labels for {len(x)} inputs", fix="give one label per input")
        self.learn(model, x[own], known[own], progress)
        t1 = time.perf_counter()
        self.calibration_scores = self.score(model, x[cal], y[cal]).double().cpu()
        self.retarget(self.fpr)
        self.fingerprint = model_fingerprint(model)
        self.info = {
            "n_train": len(own),
            "n_calibration": n_cal,
            "n_classes": n_classes,
            "threshold": self.threshold,
            "calibration_flag_rate": float((self.calibration_scores > self.threshold).double().mean()),
            "trained_on": self.trained_on,
            "grouped_by": "model's classes" if labels is None else "true labels",
            "seconds_learn": t1 - t0,
            "seconds_calibrate": time.perf_counter() - t1,
            "seconds_fit": time.perf_counter() - t0,
        }
        return self

    def retarget(self, fpr: float) -> ScoreDetector:
        """Set the threshold for another benign flag rate ``fpr`` from the held-back benign scores
        (no refitting).

        Returns:
            ``self``.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
            >>> det = Mahalanobis(calibration=0.5).fit(net, torch.randn(400, 4), progress=False)
            >>> strict, loose = det.retarget(0.1).threshold, det.retarget(0.3).threshold
            >>> strict >= loose, det.fpr
            (True, 0.3)
        """
        self.fpr = check_value(type(self), "fpr", fpr, self._what())
        if len(self.calibration_scores) == 0:
            raise SafeReuseError("the detector is not fitted", fix="call fit() first")
        self.threshold = float(
            torch.quantile(self.calibration_scores, 1.0 - self.fpr, interpolation="higher")
        )
        return self

    def detect(self, model: nn.Module, x: torch.Tensor, *, progress: bool = False) -> Detection:
        """Score ``x`` and flag the scores above the calibrated threshold.

        Returns:
            A :class:`~safereuse.applications.detect.Detection` (``tree_class`` = the model's class).
        """
        threshold = check_fitted(self.threshold, self.fingerprint, model)
        y = predicted(model, x, self.batch_size)
        if len(x) == 0:
            return Detection(torch.zeros(0, dtype=torch.bool), torch.zeros(0), y, y)
        s = self.score(model, x, y).float().cpu()
        return Detection(s > threshold, s, y, y)

    def filter(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The inputs of ``x`` the detector lets through (not flagged)."""
        return x[~self.detect(model, x).flags.to(x.device)]

    def save(self, path: str | Path) -> Path:
        """Write ``detector.safetensors`` (the learnt tensors) and ``detector.json`` into ``path``."""
        if self.threshold is None:
            raise SafeReuseError("the detector is not fitted", fix="call fit() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        own = {**self.state(), "calibration_scores": self.calibration_scores}
        tensors = {k: v.detach().cpu().contiguous() for k, v in own.items()}
        with atomic_path(path / "detector.safetensors") as tmp:
            save_file(tensors, str(tmp))
        meta = {"format": SCORE_DETECTOR_FORMAT, "config": self.config(), "threshold": self.threshold,
                "fingerprint": self.fingerprint, "info": self.info}  # fmt: skip
        with atomic_path(path / "detector.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load_saved(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ScoreDetector:
        """Rebuild from what :meth:`save` wrote (``meta``: the JSON; ``tensors``: the safetensors)."""
        config = {k: v for k, v in meta["config"].items() if k != "detector"}
        det = cls.from_params(**config)
        det.calibration_scores = tensors.pop("calibration_scores", torch.zeros(0, dtype=torch.float64))
        det.load_state(tensors)
        det.threshold = float(meta["threshold"])
        det.fingerprint = meta.get("fingerprint", "")
        det.info = meta.get("info", {})
        return det


# -- slice-space deep k-NN (the default) ------------------------------------------------------------
@DETECTORS.register("slice-knn", "deep k-NN on criterion-free slices (benign only; the default)")
@dataclass
class SliceKNN(ScoreDetector):
    """Deep k-NN in slice space (see the module docstring).

    Args:
        theta: the slicer's θ.
        k: neighbours consulted.
        dims: principal components the slice vectors are projected on (the search and the saved
            detector stay small: ``n_train × dims``).
        fpr, calibration, batch_size, seed: see :class:`ScoreDetector`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.randn(120, 4)
        >>> det = SliceKNN(k=5, dims=8).fit(net, x, progress=False)
        >>> d = det.detect(net, x[:10])
        >>> d.flags.shape, det.info["n_calibration"]
        (torch.Size([10]), 12)
    """

    # θ, k and dims as chosen on validation data (benchmarks/results/detect_select.json)
    theta: Annotated[float, Field(ge=0, lt=1)] = 0.3
    k: Annotated[int, Field(ge=1)] = 25
    dims: Annotated[int, Field(ge=1)] = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        self.means: dict[str, torch.Tensor] = {}
        self.center = torch.zeros(0)
        self.basis = torch.zeros(0, 0)
        self.bank = torch.zeros(0, 0)
        self.labels = torch.zeros(0, dtype=torch.long)

    def _slices(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        s = Slicer(theta=self.theta, reference="mean")
        dev = model_device(model)
        s.means = {k: v.to(dev) for k, v in self.means.items()}
        r = s.slice(model, x, criterion="penultimate", per_input=True, batch_size=self.batch_size)
        return torch.cat([r.synapse[k].flatten(1).float() for k in r.layers], 1).cpu()

    def _project(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        chunk = self.batch_size * 8
        parts = [(self._slices(model, x[i : i + chunk]) - self.center) @ self.basis
                 for i in range(0, len(x), chunk)]  # fmt: skip
        return torch.cat(parts) if parts else torch.zeros(0, self.basis.shape[1])

    def learn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> None:
        """Profile the benign inputs, slice them, fit the projection and keep the projected slices
        with their classes as the neighbour bank."""
        prof = Slicer(theta=self.theta, reference="mean").profile(model, x, batch_size=self.batch_size)
        self.means = {k: v.detach().cpu() for k, v in prof.means.items()}
        chunk = self.batch_size * 8
        steps = tqdm(range(0, len(x), chunk), desc="slice-knn", disable=not progress, leave=False)
        v = torch.cat([self._slices(model, x[i : i + chunk]) for i in steps])
        self.center = v.mean(0)
        q = min(self.dims, v.shape[0], v.shape[1])
        # low-rank PCA: the slices are [n, D] with D in the tens of thousands
        _, _, vh = torch.pca_lowrank(v - self.center, q=q, center=False, niter=3)
        self.basis = vh[:, :q].contiguous()
        self.bank = (v - self.center) @ self.basis
        self.labels = y.cpu().long()

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How many of the ``k`` nearest benign slices carry another class than the model's, plus
        ``d / (1 + d)`` of their mean distance ``d`` (a tie-breaker below 1)."""
        z = self._project(model, x)
        k = min(self.k, len(self.bank))
        out = []
        for i in range(0, len(z), 1024):
            d = torch.cdist(z[i : i + 1024], self.bank)
            dist, idx = d.topk(k, dim=1, largest=False)
            other = (self.labels[idx] != y[i : i + 1024, None].cpu()).float().sum(1)
            m = dist.mean(1)
            out.append(other + m / (1 + m))
        return torch.cat(out) if out else torch.zeros(0)

    def state(self) -> dict[str, torch.Tensor]:  # noqa: D102 - see ScoreDetector.state
        return {"center": self.center, "basis": self.basis, "bank": self.bank, "labels": self.labels,
                **{f"means.{k}": v for k, v in self.means.items()}}  # fmt: skip

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.center, self.basis = tensors["center"], tensors["basis"]
        self.bank, self.labels = tensors["bank"], tensors["labels"].long()
        self.means = {k[len("means.") :]: v for k, v in tensors.items() if k.startswith("means.")}


# -- Mahalanobis (Lee et al. 2018) -----------------------------------------------------------------
def head_inputs(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The penultimate features: the input of the model's last weighted layer (any ``nn.Module``).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> head_inputs(net, torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """
    head = weighted_layers(model, include_head=True)[-1]
    dev = model_device(model)
    out = []
    with analysis_mode(model), capture(model, [head], inputs=True, outputs=False) as cap:
        for i in range(0, len(x), batch_size):
            cap.clear()
            model(x[i : i + batch_size].to(dev))
            out.append(cap.inputs()[0].flatten(1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@DETECTORS.register("mahalanobis", "Mahalanobis distance on penultimate features (Lee et al. 2018)")
@dataclass
class Mahalanobis(ScoreDetector):
    """Lee et al.'s Mahalanobis detector without preprocessing or ensemble (see the module docstring).

    Args:
        fpr, calibration, batch_size, seed: see :class:`ScoreDetector`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> det = Mahalanobis().fit(net, torch.randn(200, 4), progress=False)
        >>> bool(det.detect(net, 50 * torch.randn(20, 4)).flags.float().mean() > 0.5)
        True
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.class_means = torch.zeros(0, 0)
        self.precision = torch.zeros(0, 0)

    def learn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> None:
        """Class means and the shared covariance's (pseudo-)inverse of the penultimate features."""
        f = head_inputs(model, x, self.batch_size).double()
        n_classes = int(y.max()) + 1
        means = torch.stack([f[y == c].mean(0) if (y == c).any() else f.mean(0) for c in range(n_classes)])
        z = (f - means[y]).numpy()
        cov = np.cov(z, rowvar=False, bias=True).reshape(z.shape[1], z.shape[1])
        self.class_means = means.float()
        self.precision = torch.from_numpy(np.linalg.pinv(cov, hermitian=True)).float()

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The smallest Mahalanobis distance (squared) of the features to a class mean."""
        f = head_inputs(model, x, self.batch_size)
        d = torch.stack([(((f - m) @ self.precision) * (f - m)).sum(1) for m in self.class_means], 1)
        return d.min(1).values

    def state(self) -> dict[str, torch.Tensor]:  # noqa: D102 - see ScoreDetector.state
        return {"class_means": self.class_means, "precision": self.precision}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.class_means, self.precision = tensors["class_means"], tensors["precision"]


__all__ = ["SCORE_DETECTOR_FORMAT", "Mahalanobis", "ScoreDetector", "SliceKNN", "head_inputs"]
