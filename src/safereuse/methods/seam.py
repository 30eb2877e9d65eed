"""SeaM: re-engineer a model down to the weights a target problem needs (direct and indirect reuse).

Reference: Qi, Sun, Gao, Zhang, Li, Wang, "Reusing Deep Neural Network Models through Model
Re-engineering", ICSE 2023 (spec: ``shared/specs/seam.md``).

- **Direct reuse** — :class:`SeaM` ``.reengineer(model, problem)``: a gradient search over binary
  masks of every Conv / Linear weight and bias (:func:`safereuse.slicing.maskparam.search_masks`)
  with a new ``ReLU → Linear`` head on the original logits, loss ``CE + α·ρ``; the epoch kept is
  chosen on the target problem's *validation* split (the original selects on the test set). The
  result is the original model with the masked weights zeroed plus the head
  (:class:`~safereuse.models.stacked.TargetHeadModel`). :func:`measure_reengineered` adds what is
  reported — the channel-granularity model materialised, its accuracies, channels removed, FLOPs and
  latencies; CLI: ``safereuse reengineer``; runner: the ``seam-reengineer`` experiment kind.
- **Indirect reuse** — the transfer method ``seam`` (:class:`SeaMTransfer`): (1) a new head trained on
  the frozen teacher (BatchNorm statistics adapt); (2) a mask search over the conv layers that stops
  once the removed fraction ``1 − ρ`` reaches ``prune_threshold``; (3) the *original* teacher weights ×
  masks and a fresh head, fine-tuned in full (``keep_mask`` pins the removed weights at zero; the
  artifact does not).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from ..data import DataBundle
from ..data.targets import TargetProblem, TargetSplit
from ..device import model_device, resolve_device
from ..errors import SafeReuseError
from ..metrics import compare_cost, flops
from ..models import ReusableModel
from ..models.rebuild import PRUNABLE
from ..models.stacked import TargetHeadModel
from ..params import Validated
from ..slicing import KeepMask, Masks, apply_reset
from ..slicing.maskparam import Granularity, SearchResult, mask_scores, search_masks, selection_key
from ..slicing.shrink import channels_removed, removed_fraction, shrink_target_model
from ..train import FitConfig, FitResult, accuracy_on, fit, predict
from ..utils import seed_everything
from .base import METHODS, Prepared, TransferMethod

#: The FLOPs weight each granularity searches with when ``flops_weight`` is not given: SeaM's own loss
#: for unstructured masks; for channels, the weight validation data chose over [0, 1, 4] on the
#: held-out resnet8 teacher (docs/results/seam.md) — the FLOPs term is what lets channel removal
#: reach the full-resolution layers, where the time goes.
DEFAULT_FLOPS_WEIGHT: dict[str, float] = {"weight": 0.0, "channel": 1.0}


def _correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1).cpu() == y.cpu()).sum())


def choose_flops_weight(
    trials: Sequence[SearchResult], reference_acc: float, max_acc_drop: float | None = None
) -> int:
    """The index of the search (one per FLOPs weight) to keep, on validation data only: among the
    searches whose selected epoch reaches ``reference_acc`` the smallest kept FLOPs fraction (0.1 %
    resolution; ties: higher accuracy, then the earlier weight), else SeaM's fallback (best
    validation ``acc − ρ``) among those within ``max_acc_drop`` of the reference, else the most
    accurate (the guard of :func:`~safereuse.slicing.maskparam.select_epoch`).

    Args:
        trials: the searches' results (their ``history`` holds ``flops`` where it is known).
        reference_acc: the original model's validation accuracy.
        max_acc_drop: the guard (fraction; None: unguarded).

    Returns:
        An index into ``trials``.

    Example:
        >>> def r(acc, rho, fl):
        ...     return SearchResult({}, {}, 1, acc, rho, [{"val_acc": acc, "rho": rho, "flops": fl}])
        >>> choose_flops_weight([r(0.95, 0.3, 0.40), r(0.96, 0.3, 0.20), r(0.80, 0.1, 0.05)], 0.9)
        1
        >>> choose_flops_weight([r(0.85, 0.5, 0.4), r(0.88, 0.3, 0.2)], 0.9)  # none reaches 0.9
        1
        >>> choose_flops_weight([r(0.89, 0.5, 0.4), r(0.80, 0.05, 0.02)], 0.9, max_acc_drop=0.02)
        0
    """

    def key(i: int) -> tuple:
        t = trials[i]
        fl = t.history[t.epoch - 1].get("flops")
        k = selection_key({"val_acc": t.val_acc, "rho": t.rho}, reference_acc, max_acc_drop)
        if k[0] == 0:
            return (0, int((t.rho if fl is None else fl) * 1000), -t.val_acc, i)
        return (*k, i)

    return min(range(len(trials)), key=key)


@dataclass
class Reengineered:
    """The result of :meth:`SeaM.reengineer`.

    Attributes:
        model: the re-engineered model — a copy of the original with the masked weights zeroed, under
            the new head (``model.inner`` / ``model.target_head``).
        masks: parameter name → bool (True = kept), in slicing's mask format.
        weights_kept: fraction of the masked entries kept (ρ).
        acc_original: the original model's accuracy on the problem's test split (spec's rules);
            ``acc_reengineered``: the re-engineered model's; ``n``: test images.
        val_acc_original / val_acc: the same on the validation split (what selection saw).
        search: the search's :class:`~safereuse.slicing.maskparam.SearchResult`.
        config: the resolved hyper-parameters (``flops_weight_chosen``: the FLOPs weight kept).
        flops_weight_trials: per FLOPs weight tried, its selected epoch, validation accuracy, ρ and
            kept FLOPs fraction (what :func:`choose_flops_weight` chose from).
    """

    model: TargetHeadModel
    masks: Masks
    weights_kept: float
    acc_original: float
    acc_reengineered: float
    n: int
    val_acc_original: float
    val_acc: float
    search: SearchResult
    config: dict[str, Any] = field(default_factory=dict)
    flops_weight_trials: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The numbers ``safereuse reengineer`` prints (fractions, with ``n``)."""
        return {
            "acc_original": self.acc_original,
            "acc_reengineered": self.acc_reengineered,
            "n": self.n,
            "weights_kept": self.weights_kept,
            "val_acc_original": self.val_acc_original,
            "val_acc_reengineered": self.val_acc,
            "selected_epoch": self.search.epoch,
            "selection_rule": self.search.rule,
        }


@dataclass
class SeaM(Validated):
    """SeaM's mask search for direct reuse (Qi et al., ICSE 2023): one verb, :meth:`reengineer`.

    Args:
        lr_mask: Adam learning rate of the mask scores (spec's small-scale defaults: binary 0.05,
            multi-class 0.1).
        lr_head: Adam learning rate of the new head.
        alpha: weight of the kept fraction ρ in the loss (binary 1.0, multi-class 2.0).
        epochs: search epochs (the paper: 300; small scale: 50–100).
        batch_size: examples per step (64, as the paper).
        granularity: ``weight`` (the paper's unstructured masks) or ``channel`` (whole channels fall
            and are removed for real: channels coupled through a residual add share one score, which
            also gates their BatchNorm and readers, so the model searched and selected on validation
            is the materialised one; :func:`~safereuse.slicing.maskparam.mask_scores`).
        head_every: epochs 0, k, 2k, … train only the head (the artifact's 5-epoch cycle).
        flops_weight: weight β of the kept FLOPs fraction in the loss ``CE + α·ρ + β·FLOPs`` (each
            channel group pulled by the multiplications it removes; 0: SeaM's loss). A list (e.g.
            ``[0, 1, 4]``) runs one search per weight and keeps the one that the validation split
            prefers (:func:`choose_flops_weight`); the test split is never looked at. None (the
            default): :data:`DEFAULT_FLOPS_WEIGHT` of the granularity — 0 for ``weight`` (SeaM's
            loss), 1 for ``channel`` (chosen on validation data: docs/results/seam.md).
        max_acc_drop: the guard on SeaM's fallback rule (:func:`~safereuse.slicing.maskparam.select_epoch`):
            when no epoch reaches the original's validation accuracy, only epochs within this
            fraction of it compete on ``acc − ρ``, else the most accurate is kept (None: SeaM's rule
            unguarded). The manifest's ``selection_rule`` says which branch kept the epoch.

    Example:
        >>> s = SeaM(epochs=5, granularity="channel")
        >>> s.config()["granularity"], s.config()["lr_mask"]
        ('channel', 0.05)
        >>> SeaM(alpha=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: reengineer: alpha=0 is invalid (expected a number > 0) ...
    """

    lr_mask: Annotated[float, Field(gt=0)] = 0.05
    lr_head: Annotated[float, Field(gt=0)] = 0.1
    alpha: Annotated[float, Field(gt=0)] = 1.0
    epochs: Annotated[int, Field(ge=1)] = 50
    batch_size: Annotated[int, Field(ge=1)] = 64
    granularity: Granularity = "weight"
    head_every: Annotated[int, Field(ge=2)] = 5
    flops_weight: Annotated[float, Field(ge=0)] | list[Annotated[float, Field(ge=0)]] | None = None
    max_acc_drop: Annotated[float, Field(ge=0, le=1)] | None = 0.01

    def _what(self) -> str:
        return "reengineer"

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def reengineer(
        self,
        model: ReusableModel,
        problem: TargetProblem,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
    ) -> Reengineered:
        """Search the weights of ``model`` that ``problem`` needs; ``model`` leaves exactly as it came.

        Args:
            model: the trained model (any contract model; its Conv / Linear layers are masked, its own
                classifier included, BatchNorm frozen in eval mode).
            problem: the target problem (:func:`safereuse.data.targets.target_problem`).
            seed: seed of the head's initialisation and the data order.
            device: ``auto``, ``cpu``, ``cuda``...
            progress: tqdm bar over the search epochs.
            checkpoint_dir: resumable search state (interrupt, run again, it continues).

        Returns:
            A :class:`Reengineered`.
        """
        if len(problem.train) == 0 or len(problem.val) == 0:
            raise SafeReuseError("the target problem is empty", fix="choose classes present in the data")
        dev = resolve_device(device)
        home = model_device(model)
        seed_everything(seed)
        n_orig = model.num_classes
        head = nn.Sequential(nn.ReLU(), nn.Linear(n_orig, problem.num_classes)).to(dev)
        head_init = {k: v.clone() for k, v in head.state_dict().items()}
        model.to(dev)
        try:
            val_ref = self._original_acc(model, problem, problem.val)
            fw = DEFAULT_FLOPS_WEIGHT[self.granularity] if self.flops_weight is None else self.flops_weight
            weights = fw if isinstance(fw, list) else [fw]
            if not weights:
                raise SafeReuseError("flops_weight=[] names no weight", fix="e.g. -p flops_weight=[0,1,4]")
            example = problem.train.x[:1].to(dev)
            trials: list[SearchResult] = []
            for i, beta in enumerate(weights):
                ck = checkpoint_dir
                if ck is not None and len(weights) > 1:
                    ck = Path(ck) / f"flops_weight_{i}"
                if i:  # every weight starts from the same head, data order and random state
                    seed_everything(seed)
                    head.load_state_dict(head_init)
                with mask_scores(model, "all", self.granularity, example_input=example) as scores:
                    trials.append(
                        search_masks(
                            model,
                            head,
                            (problem.train.x, problem.train.y),
                            (problem.val.x, problem.val.y),
                            scores_of=lambda scores=scores: scores,
                            epochs=self.epochs,
                            lr_mask=self.lr_mask,
                            lr_head=self.lr_head,
                            alpha=self.alpha,
                            flops_weight=float(beta),
                            batch_size=self.batch_size,
                            head_every=self.head_every,
                            reference_acc=val_ref,
                            max_acc_drop=self.max_acc_drop,
                            seed=seed,
                            device=dev,
                            progress=progress,
                            checkpoint_dir=ck,
                            desc="seam search" if len(weights) == 1 else f"seam search β={beta}",
                        )
                    )
            chosen = choose_flops_weight(trials, val_ref, self.max_acc_drop)
            found = trials[chosen]
            beta_trials = [
                {"flops_weight": float(w), "epoch": t.epoch, "val_acc": t.val_acc, "rho": t.rho,
                 "flops": t.history[t.epoch - 1].get("flops"), "selection_rule": t.rule}
                for w, t in zip(weights, trials, strict=True)
            ]  # fmt: skip
            acc_orig = self._original_acc(model, problem, problem.test)
        finally:
            model.to(home)
        inner = copy.deepcopy(model).to(dev)
        apply_reset(inner, found.masks)
        out = TargetHeadModel(inner, problem.num_classes)
        out.target_head.load_state_dict({k[2:]: v for k, v in found.head_state.items()})
        out.to(dev).eval()
        acc = _correct(predict(out, problem.test.x), problem.test.y) / len(problem.test)
        return Reengineered(
            model=out,
            masks=found.masks,
            weights_kept=found.rho,
            acc_original=acc_orig,
            acc_reengineered=acc,
            n=len(problem.test),
            val_acc_original=val_ref,
            val_acc=found.val_acc,
            search=found,
            config={**self.config(), "flops_weight_chosen": float(weights[chosen])},
            flops_weight_trials=beta_trials,
        )

    @staticmethod
    def _original_acc(model: nn.Module, problem: TargetProblem, split: TargetSplit) -> float:
        if len(split) == 0:
            return float("nan")
        logits = predict(model, split.x)
        return float(problem.original_correct(logits, split).float().mean())


#: How the original model is scored on a target problem (the ``original_rule`` of the metrics).
ORIGINAL_RULES: dict[str, str] = {
    "binary": "binary: correct iff (pred == target) == (label == target)",
    "multiclass": "multi-class: argmax over all the model's classes, exact class only (favours SeaM)",
}


@dataclass
class MeasuredReengineering:
    """The result of :func:`measure_reengineered`: what ``safereuse reengineer`` saves and prints.

    Attributes:
        model: the re-engineered model on the CPU in eval mode — with ``granularity=channel`` the
            materialised one (channels whose masks are all zero removed for real), else the masked one.
        found: the search's :class:`Reengineered` (masks, search history, chosen FLOPs weight).
        metrics: the numbers, in the order of the artifact's manifest ``metrics`` (see
            :func:`measure_reengineered`).
    """

    model: TargetHeadModel
    found: Reengineered
    metrics: dict[str, Any]


def measure_reengineered(
    seam: SeaM,
    model: ReusableModel,
    problem: TargetProblem,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    threads: int = 2,
) -> MeasuredReengineering:
    """SeaM's direct reuse measured as ``safereuse reengineer`` reports it (Qi et al., ICSE 2023).

    The search (:meth:`SeaM.reengineer`), then for ``granularity=channel`` the materialisation
    (:func:`~safereuse.slicing.shrink.shrink_target_model`) whose test and validation accuracies are
    the ones reported (the model searched and selected on validation is the materialised one); the
    channels removed per layer (:func:`~safereuse.slicing.shrink.channels_removed`), the cost of both
    models side by side (:func:`~safereuse.metrics.compare_cost`: non-zero-weight FLOPs and latency
    at batch 1 and 64, interleaved, ``threads`` CPU threads) and ``torch.utils.flop_counter`` counts.
    The runner's ``seam-reengineer`` experiment kind and the CLI both call this one function.

    Args:
        seam: the SeaM parameters.
        model: the trained model; it ends on the CPU (its training mode restored), its weights unchanged.
        problem: the target problem (:func:`safereuse.data.targets.target_problem`).
        seed: seed of the head and the data order.
        device: ``auto``, ``cpu``, ``cuda``... of the search (costs are measured on the CPU).
        progress: tqdm bar over the search epochs.
        checkpoint_dir: resumable search state (interrupt, run again, it continues).
        threads: CPU threads of the latency measurement (both models, same run).

    Returns:
        A :class:`MeasuredReengineering` whose ``metrics`` are ``acc_original``, ``acc_reengineered``
        (test split), ``n`` (test images), ``weights_kept`` (ρ), ``channels_removed`` (fraction of the
        Conv / Linear output channels removed for real, the model's own head left out),
        ``flops_original``, ``flops_reengineered``, ``latency_original_ms``,
        ``latency_reengineered_ms`` (``{"1": ms, "64": ms}``), ``latency_threads``,
        ``latency_rounds``, ``flop_counter_original``, ``flop_counter_reengineered``,
        ``val_acc_original``, ``val_acc_reengineered``, ``selected_epoch``, ``selection_rule``,
        ``flops_weight`` (the one kept), ``original_rule`` (:data:`ORIGINAL_RULES`),
        ``channels_removed_per_layer`` (``{layer: {"removed", "of"}}``) and, when several FLOPs
        weights were tried, ``flops_weight_trials``.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.data.targets import target_problem
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2])
        >>> m = create_model("smallcnn", num_classes=3, width=4, hidden=16)
        >>> res = measure_reengineered(SeaM(epochs=2, granularity="channel"), m,
        ...                            target_problem(data, [1], binary=True), progress=False)
        >>> res.metrics["n"] == len(target_problem(data, [1], binary=True).test), res.model.training
        (True, False)
    """
    r = seam.reengineer(
        model, problem, seed=seed, device=device, progress=progress, checkpoint_dir=checkpoint_dir
    )
    result = r.model.cpu().eval()
    example = problem.test.x[:1].cpu()
    acc, val_acc = r.acc_reengineered, r.val_acc
    if seam.granularity == "channel":  # channels whose masks are all zero go for real
        result = shrink_target_model(result, r.masks, example)
        acc = accuracy_on(result, problem.test)
        val_acc = accuracy_on(result, problem.val)  # the materialised model (= the searched one)
    was_training = model.training
    original = model.cpu().eval()
    try:
        per_layer = channels_removed(original, result.inner)
        cost = compare_cost(original, result, example, threads=threads)
        shape = tuple(example.shape[1:])
        metrics = {
            "acc_original": r.acc_original,
            "acc_reengineered": acc,
            "n": r.n,
            "weights_kept": r.weights_kept,
            "channels_removed": removed_fraction(per_layer),
            **cost,
            "flop_counter_original": flops(original, shape),
            "flop_counter_reengineered": flops(result, shape),
            "val_acc_original": r.val_acc_original,
            "val_acc_reengineered": val_acc,
            "selected_epoch": r.search.epoch,
            "selection_rule": r.search.rule,
            "flops_weight": r.config.get("flops_weight_chosen", 0.0),
            "original_rule": ORIGINAL_RULES[problem.problem_type],
            "channels_removed_per_layer": per_layer,
        }
    finally:
        original.train(was_training)
    if len(r.flops_weight_trials) > 1:
        metrics["flops_weight_trials"] = r.flops_weight_trials
    return MeasuredReengineering(result, r, metrics)


@METHODS.register(
    "seam", "SeaM: keep the teacher's conv weights a mask search finds relevant to the student, fine-tune"
)
@dataclass
class SeaMTransfer(TransferMethod):
    """SeaM's indirect reuse (Qi et al., ICSE 2023), as the artifact's defect-inheritance code does it.

    1. A new head on the frozen teacher, ``head_epochs`` of SGD at ``head_lr`` (BatchNorm statistics
       adapt to the student's data).
    2. A mask search over the conv layers (``granularity``) with one Adam over the scores
       (``lr_mask``) and the model's head (``lr_fc``), loss ``CE + α·ρ``, BatchNorm frozen; it stops at
       the first epoch whose removed fraction ``1 − ρ`` reaches ``prune_threshold`` and keeps its
       masks (else the epoch with the best validation ``acc − ρ``).
    3. The *original* teacher weights × masks, a fresh head, every parameter fine-tuned with
       :class:`TransferMethod`'s schedule; ``keep_mask`` pins the removed weights at zero (the
       artifact does not).

    Args:
        head_epochs: epochs of step 1; ``head_lr``: its SGD learning rate.
        mask_epochs: at most this many search epochs (step 2).
        lr_mask: Adam learning rate of the scores; ``lr_fc``: of the head during the search.
        alpha: weight of ρ in the search loss.
        prune_threshold: the removed fraction ``t`` that ends the search.
        granularity: ``weight`` (the paper) or ``channel``.
        keep_mask: enforce the masks during fine-tuning.

    Step 3 uses the same fine-tuning schedule as ``finetune`` (SGD lr 0.01, momentum 0.9, head ×10,
    label smoothing 0.1, 20 epochs, cosine) so the comparison isolates the re-engineering; the
    artifact's (SGD body 0.005 / head 0.05, momentum 0) is ``lr=0.005 momentum=0 label_smoothing=0``.
    The spec's small-scale defaults are used for the search (lr_mask 0.05, α 0.5, t 0.6); few-shot
    students take a few steps per epoch, hence ``mask_epochs`` 40 (the first weights fall after
    ≈ 1/lr_mask = 20 steps).

    Example:
        >>> m = SeaMTransfer(prune_threshold=0.5, keep_mask=True)
        >>> m.config()["method"], m.config()["prune_threshold"], m.config()["alpha"]
        ('seam', 0.5, 0.5)
    """

    head_epochs: Annotated[int, Field(ge=1)] = 5
    head_lr: Annotated[float, Field(gt=0)] = 0.1
    mask_epochs: Annotated[int, Field(ge=1)] = 40
    lr_mask: Annotated[float, Field(gt=0)] = 0.05
    lr_fc: Annotated[float, Field(gt=0)] = 0.001
    alpha: Annotated[float, Field(gt=0)] = 0.5
    prune_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.6
    granularity: Granularity = "weight"
    keep_mask: bool = False

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        model = prepared.model
        dev = resolve_device(cfg.device)
        model.to(dev)
        # the teacher's weights (and BN statistics) with the fresh head of prepare(): step 3 starts here
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ck = Path(checkpoint_dir) if checkpoint_dir else None
        head_cfg = FitConfig(
            epochs=self.head_epochs,
            batch_size=cfg.batch_size,
            lr=self.head_lr,
            momentum=0.0,
            weight_decay=cfg.weight_decay,
            schedule="constant",
            train_last_k=1,
            bn_stats="update",
            seed=cfg.seed,
            device=cfg.device,
            progress=cfg.progress,
        )
        step1 = fit(model, data.train, data.val, head_cfg, checkpoint_dir=ck / "head" if ck else None)
        example = data.train.x[:1].to(dev)
        with mask_scores(model, "conv", self.granularity, example_input=example) as scores:
            found = search_masks(
                model,
                None,
                (data.train.x, data.train.y),
                (data.val.x, data.val.y),
                scores_of=lambda: scores,
                epochs=self.mask_epochs,
                lr_mask=self.lr_mask,
                lr_head=self.lr_fc,
                alpha=self.alpha,
                batch_size=cfg.batch_size,
                head_every=None,
                stop_removed=self.prune_threshold,
                head_params=list(model.head.parameters()),
                seed=cfg.seed,
                device=dev,
                progress=cfg.progress,
                checkpoint_dir=ck / "search" if ck else None,
                desc="seam search",
            )
        model.load_state_dict(original)
        apply_reset(model, found.masks)
        # the Conv / Linear weights only (channel masks also carry the BatchNorm entries they gate)
        weights = [
            k
            for n, k in found.masks.items()
            if isinstance(model.get_submodule(n.rpartition(".")[0]), PRUNABLE)
        ]
        kept = sum(int(k.sum()) for k in weights)
        total = sum(k.numel() for k in weights)
        prepared.extras.update({f"seam.keep.{k}": v for k, v in found.masks.items()})
        prepared.info.update(
            head_val_acc=step1.best_val_acc,
            search_epoch=found.epoch,
            search_epochs_run=len(found.history),
            search_val_acc=found.val_acc,
            weights_total=total,
            weights_reset=total - kept,
            reset_fraction=(total - kept) / max(total, 1),
            threshold_reached=1.0 - found.rho >= self.prune_threshold,
            search_seconds=round(found.seconds, 3),
        )
        after = KeepMask(found.masks) if self.keep_mask else None
        return fit(
            model, data.train, data.val, cfg, after_step=after, checkpoint_dir=ck / "finetune" if ck else None
        )
