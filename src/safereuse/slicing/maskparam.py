"""Mask search on any model: real-valued scores behind ``torch.nn.utils.parametrize`` (SeaM).

Reference: Qi, Sun, Gao, Zhang, Li, Wang, "Reusing Deep Neural Network Models through Model
Re-engineering", ICSE 2023 (spec: ``shared/specs/seam.md``).

Every masked parameter ``W`` (a Conv / Linear weight or bias) gets a score tensor ``S`` initialised to
1.0; the layer computes with ``W ⊙ 1[S > 0]``. :func:`mask_scores` registers the parametrizations,
hands back a :class:`MaskScores` and removes them in ``finally`` — the model leaves as it came (same
Parameter objects, order, ``requires_grad``, hooks, class). The original artifact baked custom
``MaskConv`` / ``MaskLinear`` layers into its own model copies; here any ``nn.Module`` works.

**Gradient** (the artifact's, which changes results): each mask is binarised on its own with a
*clipped* straight-through estimator, ``∂L/∂S = hardtanh(∂L/∂M)``; the kept fraction ρ is computed
from a *second*, unclipped binarisation of all masks joined, so a score's gradient is
``hardtanh(∂CE/∂M) + α·n/N`` (``n``: weights under the score, 1 for ``weight`` granularity). With
Adam that small pull moves a score by ≈ lr per step wherever the CE gradient vanishes.

Granularities: ``weight`` (the paper's unstructured masks) and ``channel`` (one score per output
channel, shared by the layer's weight rows and bias — whole channels fall, so the result can be
materialised into a smaller dense model).

:func:`search_masks` is the search loop shared by direct reuse (:class:`safereuse.methods.seam.SeaM`
``.reengineer``) and indirect reuse (the ``seam`` transfer method): two Adam optimisers, head-only
epochs every ``head_every`` epochs, selection on validation data (:func:`select_epoch`), tqdm
progress and resumable state (safetensors + JSON, like :func:`safereuse.train.fit`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..errors import SafeReuseError
from ..utils import atomic_path, config_hash, preserve_modes, write_json_atomic
from .coverage import coverage_layers
from .masks import Masks

Granularity = Literal["weight", "channel"]
GRANULARITIES = ("weight", "channel")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

__all__ = [
    "GRANULARITIES",
    "Granularity",
    "MaskScores",
    "SearchResult",
    "binarize",
    "mask_scores",
    "search_masks",
    "select_epoch",
    "selection_key",
]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, clip: bool) -> torch.Tensor:
        ctx.clip = clip
        return (s > 0).to(s.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (g.clamp(-1.0, 1.0) if ctx.clip else g), None


def binarize(score: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """``1[score > 0]`` with a straight-through gradient, clipped to [−1, 1] (``clip``) or passed as is.

    Example:
        >>> s = torch.tensor([0.5, -0.2], requires_grad=True)
        >>> (binarize(s) * torch.tensor([3.0, -0.5])).sum().backward()
        >>> s.grad.tolist()
        [1.0, -0.5]
    """
    return _StraightThrough.apply(score, clip)


class _ScoreMask(nn.Module):
    """The parametrization: ``W ⊙ 1[S > 0]`` (``S`` broadcast over a channel's weights). The score is
    a plain attribute, not a registered parameter, so it never enters the model's state."""

    def __init__(self, score: torch.Tensor, ndim: int) -> None:
        super().__init__()
        object.__setattr__(self, "score", score)  # not registered: the scores live outside the model
        self.view = (-1,) + (1,) * (ndim - 1) if score.dim() == 1 and ndim > 1 else None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        m = binarize(self.score)
        return w * (m.view(self.view) if self.view is not None else m)


@dataclass
class _Entry:
    name: str  # parameter name, e.g. "layer1.0.conv1.weight"
    score: nn.Parameter
    shape: torch.Size  # the parameter's shape
    per_score: int  # weights under one score entry (1 for weight granularity)


@dataclass
class MaskScores:
    """The scores of a model under :func:`mask_scores` (one tensor per score, shared where a channel's
    weight rows and bias share one).

    Attributes:
        entries: one per masked parameter.
        total: the number of masked weights ``N``.
    """

    entries: list[_Entry]
    total: int

    def parameters(self) -> list[nn.Parameter]:
        """The distinct score tensors (what the mask optimiser trains)."""
        seen: dict[int, nn.Parameter] = {}
        for e in self.entries:
            seen.setdefault(id(e.score), e.score)
        return list(seen.values())

    def _unique(self) -> list[tuple[nn.Parameter, int]]:
        """Distinct scores with the number of weights under each entry (a shared channel score counts
        its weight rows and its bias)."""
        out: dict[int, list[Any]] = {}
        for e in self.entries:
            if id(e.score) in out:
                out[id(e.score)][1] += e.per_score
            else:
                out[id(e.score)] = [e.score, e.per_score]
        return [(s, n) for s, n in out.values()]

    def rho(self) -> torch.Tensor:
        """Kept fraction ρ of the masked weights, differentiable: each score gets ``n / N`` (unclipped)."""
        terms = [binarize(s, clip=False).sum() * n for s, n in self._unique()]
        return torch.stack(terms).sum() / self.total

    def kept_fraction(self) -> float:
        """ρ as a number (no graph)."""
        with torch.no_grad():
            return float(sum(int((s > 0).sum()) * n for s, n in self._unique())) / self.total

    def masks(self) -> Masks:
        """The current masks in slicing's format: parameter name → bool (True = kept), on the CPU."""
        out = {}
        for e in self.entries:
            k = (e.score.detach() > 0).cpu()
            if k.shape != e.shape:
                k = k.view((-1,) + (1,) * (len(e.shape) - 1)).expand(e.shape).clone()
            out[e.name] = k
        return out

    def state(self) -> dict[str, torch.Tensor]:
        """Score values by parameter name (copies), e.g. for a checkpoint."""
        return {e.name: e.score.detach().clone() for e in self.entries}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for e in self.entries:
                e.score.copy_(state[e.name].to(e.score.device))


@contextmanager
def mask_scores(
    model: nn.Module,
    layers: Literal["all", "conv", "linear"] | Sequence[str] = "all",
    granularity: Granularity = "weight",
    bias: bool = True,
) -> Iterator[MaskScores]:
    """Put score masks on the weights (and biases) of ``model``'s Conv / Linear layers, for a ``with``.

    While inside, the layers compute with ``W ⊙ 1[S > 0]`` and all the model's parameters are frozen
    (``requires_grad=False``); on exit (also on an exception) the parametrizations are removed and
    every parameter comes back as the same object, in the same order, with its ``requires_grad``.

    Args:
        model: any ``nn.Module``.
        layers: ``all`` Conv + Linear layers (the model's own classifier included, as SeaM does),
            ``conv``, ``linear``, or a list of module names.
        granularity: ``weight`` (one score per weight) or ``channel`` (one per output channel).
        bias: mask biases too.

    Yields:
        The :class:`MaskScores` (initialised to 1: everything kept).

    Raises:
        SafeReuseError: no Conv / Linear layer; an unknown granularity.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> x = torch.rand(4, 3)
        >>> with mask_scores(net) as sc:
        ...     same = torch.equal(net(x), net[2](net[1](net[0](x))))
        ...     with torch.no_grad():
        ...         sc.parameters()[0][0, 0] = -1.0  # drop one weight of the first layer
        ...     kept = sc.kept_fraction()
        >>> same, round(kept * 11, 3), sum(1 for _ in net.parameters())
        (True, 10.0, 4)
    """
    if granularity not in GRANULARITIES:
        raise SafeReuseError(
            f"granularity {granularity!r} does not exist", fix="choose granularity=weight or channel"
        )
    if isinstance(layers, str):
        chosen = coverage_layers(model, layers)
        if not chosen and coverage_layers(nn.Sequential(model), layers):
            chosen = [("", model)]  # the model is itself one layer
    else:
        mods = dict(model.named_modules())
        missing = [n for n in layers if n not in mods]
        if missing:
            raise SafeReuseError(f"{type(model).__name__} has no layer {missing[0]!r}", fix="name a module")
        chosen = [(n, mods[n]) for n in layers]
    chosen = [(n, m) for n, m in chosen if isinstance(getattr(m, "weight", None), torch.Tensor)]
    if not chosen:
        what = f"no {layers!r} layer" if isinstance(layers, str) else "none of the named layers with a weight"
        raise SafeReuseError(
            f"{type(model).__name__} has {what} to mask",
            fix="re-engineer a model with such layers (SeaM masks Conv2d weights by default)",
        )
    entries: list[_Entry] = []
    # every parameter of the model is frozen while masked (SeaM trains only scores and the new head)
    orders = {n: list(m._parameters) for n, m in chosen}
    done: list[tuple[nn.Module, str]] = []
    with preserve_modes(model):  # flags restored last, after the parametrizations are gone
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for n, m in chosen:
                w = m.weight
                names = ["weight"] + (["bias"] if bias and getattr(m, "bias", None) is not None else [])
                shared = None
                if granularity == "channel":
                    shared = nn.Parameter(torch.ones(w.shape[0], device=w.device, dtype=w.dtype))
                for attr in names:
                    p = getattr(m, attr)
                    score = shared if shared is not None else nn.Parameter(torch.ones_like(p.detach()))
                    per = p[0].numel() if shared is not None else 1
                    p.requires_grad_(False)
                    parametrize.register_parametrization(m, attr, _ScoreMask(score, p.dim()), unsafe=True)
                    done.append((m, attr))
                    entries.append(_Entry(f"{n}.{attr}" if n else attr, score, p.shape, per))
            total = sum(math.prod(e.shape) for e in entries)
            yield MaskScores(entries, total)
        finally:
            for m, attr in reversed(done):
                parametrize.remove_parametrizations(m, attr, leave_parametrized=False)
            for n, m in chosen:
                params = dict(m._parameters)
                if list(params) != orders[n] and set(params) == set(orders[n]):
                    m._parameters.clear()
                    m._parameters.update((k, params[k]) for k in orders[n])


# -- the search ------------------------------------------------------------------------------------
def selection_key(record: dict[str, float], reference_acc: float) -> tuple:
    """Sort key of an epoch under SeaM's rule (smaller is better; see :func:`select_epoch`).

    Example:
        >>> selection_key({"val_acc": 0.95, "rho": 0.1004}, 0.9)
        (0, 100, -0.95)
        >>> selection_key({"val_acc": 0.5, "rho": 0.25}, 0.9)
        (1, -0.25)
    """
    acc, rho = record["val_acc"], record["rho"]
    if acc >= reference_acc:
        return (0, int(rho * 1000), -acc)
    return (1, -(acc - rho))


def select_epoch(history: Sequence[dict[str, float]], reference_acc: float) -> int:
    """The index of the epoch SeaM keeps: among epochs with ``val_acc ≥ reference_acc`` the smallest
    ρ at 0.1 % resolution (``int(ρ·1000)``), ties to the higher accuracy (then the earlier epoch);
    when none reaches the reference, the best ``val_acc − ρ``.

    Args:
        history: per-epoch records with ``val_acc`` and ``rho`` (fractions).
        reference_acc: the original model's validation accuracy on the target problem.

    Example:
        >>> h = [{"val_acc": 0.90, "rho": 1.0}, {"val_acc": 0.95, "rho": 0.1004},
        ...      {"val_acc": 0.97, "rho": 0.1009}, {"val_acc": 0.80, "rho": 0.01}]
        >>> select_epoch(h, 0.9), select_epoch(h, 0.96), select_epoch(h, 0.99)
        (2, 2, 2)
        >>> select_epoch(h[:2] + [{"val_acc": 0.95, "rho": 0.1001}], 0.9)  # same int(ρ·1000): earlier
        1
    """
    if not history:
        raise SafeReuseError("the mask search ran no epoch", fix="set epochs >= 1")
    return min(range(len(history)), key=lambda i: (selection_key(history[i], reference_acc), i))


@dataclass
class SearchResult:
    """What :func:`search_masks` kept.

    Attributes:
        masks: the selected epoch's masks (True = kept).
        head_state: the trainable head's parameters at that epoch.
        epoch: the selected epoch (1-based).
        val_acc: its validation accuracy; ``rho``: its kept fraction.
        history: per epoch ``{"epoch", "phase", "loss", "val_acc", "rho"}``.
        seconds: wall time; ``resumed_from``: epochs restored from a checkpoint.
    """

    masks: Masks
    head_state: dict[str, torch.Tensor]
    epoch: int
    val_acc: float
    rho: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def _accuracy(forward: Callable[[torch.Tensor], torch.Tensor], x, y, batch: int, dev) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((forward(x[i : i + batch].to(dev)).argmax(1) == y[i : i + batch].to(dev)).sum())
    return correct / len(y)


def search_masks(
    model: nn.Module,
    head: nn.Module | None,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    scores_of: Callable[[], Any],
    epochs: int,
    lr_mask: float,
    lr_head: float,
    alpha: float,
    batch_size: int = 64,
    head_every: int | None = 5,
    reference_acc: float = 1.0,
    stop_removed: float | None = None,
    head_params: Sequence[nn.Parameter] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    desc: str = "mask search",
) -> SearchResult:
    """Gradient search of masks (SeaM): ``L = CE(head(model(x)), y) + α·ρ`` with Adam.

    Call it inside :func:`mask_scores` (``scores_of`` returns that :class:`MaskScores`). BatchNorm
    layers run in eval mode (frozen statistics), other layers in train mode; modes, ``requires_grad``
    and ``.grad`` of the model and head are restored on exit.

    Args:
        model: the masked model.
        head: the new head on top of ``model``'s output (None: ``model``'s output is the logits).
        train: ``(x, y)`` of the target problem's training split; ``val``: of its validation split.
        scores_of: returns the :class:`MaskScores` to train.
        epochs: search epochs.
        lr_mask: Adam learning rate of the scores; ``lr_head``: of the head.
        alpha: weight of ρ in the loss.
        batch_size: examples per step.
        head_every: epochs ``0, k, 2k, …`` train only the head with their own Adam (the artifact's
            5-epoch cycle); the others train scores and head together with a second Adam. None: no
            head-only epochs (indirect reuse).
        reference_acc: the original model's validation accuracy (selection, :func:`select_epoch`).
        stop_removed: stop at the first epoch whose removed fraction ``1 − ρ`` reaches this and keep
            it (indirect reuse's prune threshold); otherwise the selection rule decides.
        head_params: the parameters the head phase trains (default: ``head``'s).
        seed: seed of the data order.
        device: where to run.
        progress: tqdm bar per epoch.
        checkpoint_dir: resumable state after every epoch (a later call with the same config resumes).
        desc: the progress bar's label.

    Returns:
        A :class:`SearchResult`.
    """
    scores: MaskScores = scores_of()
    dev = torch.device(device)
    hp = list(head_params) if head_params is not None else list(head.parameters() if head else [])
    roots = [model] + ([head] if head is not None else [])
    modules = [m for r in roots for m in r.modules()]

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return head(out) if head is not None else out

    x_tr, y_tr = train[0].to(dev), train[1].to(dev)
    n = len(y_tr)
    if n == 0:
        raise SafeReuseError("the target problem's training split is empty", fix="use more training data")
    steps = max(1, math.ceil(n / batch_size))
    score_params = scores.parameters()
    opt_head = torch.optim.Adam(hp, lr=lr_head) if (head_every and hp) else None
    groups = [{"params": score_params, "lr": lr_mask}] + ([{"params": hp, "lr": lr_head}] if hp else [])
    opt_mask = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    # only the best epoch so far is kept (not one copy per epoch): the rule is a total order
    ref = math.inf if stop_removed is not None else reference_acc
    best: tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    ckpt = _SearchCheckpoint(Path(checkpoint_dir), {
        "epochs": epochs, "lr_mask": lr_mask, "lr_head": lr_head, "alpha": alpha, "batch_size": batch_size,
        "head_every": head_every, "stop_removed": stop_removed, "seed": seed, "n": n,
        "scores": [[e.name, list(e.shape), e.per_score] for e in scores.entries],
    }) if checkpoint_dir else None  # fmt: skip
    start = 0
    if ckpt is not None and ckpt.exists():
        start, history, best = ckpt.load(scores, hp, opt_head, opt_mask, gen, dev)
        if stop_removed is not None and history and 1.0 - history[-1]["rho"] >= stop_removed:
            start = epochs  # interrupted right after the stopping epoch was saved: nothing left to run
    t0 = time.perf_counter()
    with preserve_modes(*roots):  # modes and requires_grad of the model and head come back
        try:
            for p in hp:
                p.requires_grad_(True)
            bar = tqdm(range(start, epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
            for epoch in bar:
                for m in modules:
                    m.train(not isinstance(m, _BN))
                head_only = bool(head_every) and epoch % head_every == 0 and opt_head is not None
                opt = opt_head if head_only else opt_mask
                for s in score_params:
                    s.requires_grad_(not head_only)
                perm = torch.randperm(n, generator=gen).to(dev)
                tot = torch.zeros((), device=dev)
                for i in range(steps):
                    idx = perm[i * batch_size : (i + 1) * batch_size]
                    loss = F.cross_entropy(forward(x_tr[idx]), y_tr[idx])
                    if not head_only:
                        loss = loss + alpha * scores.rho()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += loss.detach()
                for m in modules:
                    m.eval()
                acc = _accuracy(forward, val[0], val[1], 512, dev)
                rho = scores.kept_fraction()
                loss_v = float(tot) / steps
                if not math.isfinite(loss_v):
                    raise SafeReuseError(
                        f"the mask search diverged at epoch {epoch + 1}", fix="lower lr_mask"
                    )
                history.append({"epoch": epoch + 1, "phase": "head" if head_only else "mask", "loss": loss_v,
                                "val_acc": acc, "rho": rho})  # fmt: skip
                reached = stop_removed is not None and 1.0 - rho >= stop_removed
                i = len(history) - 1
                if (
                    reached
                    or best is None
                    or selection_key(history[i], ref) < selection_key(history[best[0]], ref)
                ):
                    best = (
                        i,
                        {k: v.cpu() for k, v in scores.state().items()},
                        {str(j): p.detach().cpu().clone() for j, p in enumerate(hp)},
                    )
                bar.set_postfix(loss=f"{loss_v:.3f}", val=f"{acc:.3f}", kept=f"{rho:.3f}")
                if ckpt is not None:
                    ckpt.save(scores, hp, opt_head, opt_mask, gen, epoch + 1, history, best)
                if reached:
                    break
        finally:
            for s in score_params:
                s.grad = None
            for p in hp:
                p.grad = None
    if best is None:
        raise SafeReuseError("the mask search ran no epoch", fix="set epochs >= 1")
    chosen, score_state, head_snap = best
    scores.load(score_state)
    with torch.no_grad():
        for j, p in enumerate(hp):
            p.copy_(head_snap[str(j)].to(p.device))
    named = {}
    if head is not None:
        named = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    rec = history[chosen]
    return SearchResult(
        masks=scores.masks(),
        head_state=named,
        epoch=int(rec["epoch"]),
        val_acc=float(rec["val_acc"]),
        rho=float(rec["rho"]),
        history=history,
        seconds=time.perf_counter() - t0,
        resumed_from=start,
    )


class _SearchCheckpoint:
    """Resumable search state (scores, head, both optimisers, RNG, the best epoch's masks) as safetensors +
    JSON, keyed by the search's config so a changed run restarts."""

    def __init__(self, folder: Path, cfg: dict[str, Any]) -> None:
        self.folder = folder
        self.key = config_hash(cfg)
        self.tensors = folder / "search_state.safetensors"
        self.meta = folder / "search_state.json"

    def exists(self) -> bool:
        try:
            return self.tensors.is_file() and json.loads(self.meta.read_text()).get("key") == self.key
        except (OSError, json.JSONDecodeError):
            return False

    @staticmethod
    def _opt_tensors(tag: str, opt: torch.optim.Optimizer | None, out: dict[str, torch.Tensor]) -> dict:
        if opt is None:
            return {}
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    out[f"{tag}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        return scalars

    @staticmethod
    def _load_opt(tag: str, opt, tensors, scalars, dev) -> None:
        if opt is None:
            return
        sd = opt.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith(tag + "."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(dev)
        for pid, sc in scalars.items():
            state.setdefault(int(pid), {}).update(sc)
        sd["state"] = state
        opt.load_state_dict(sd)

    def save(self, scores, hp, opt_head, opt_mask, gen, epoch, history, best) -> None:
        t: dict[str, torch.Tensor] = {}
        for k, v in scores.state().items():
            t[f"score.{k}"] = v.cpu().contiguous()
        for j, p in enumerate(hp):
            t[f"head.{j}"] = p.detach().cpu().contiguous()
        best_i, s, h = best
        t.update({f"best.score.{k}": v.contiguous() for k, v in s.items()})
        t.update({f"best.head.{k}": v.contiguous() for k, v in h.items()})
        sc_h = self._opt_tensors("opt_head", opt_head, t)
        sc_m = self._opt_tensors("opt_mask", opt_mask, t)
        t["rng"] = gen.get_state()
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.tensors) as tmp:
            save_file(t, str(tmp))
        write_json_atomic(self.meta, {"key": self.key, "epoch": epoch, "history": history, "best": best_i,
                                      "opt_head": sc_h, "opt_mask": sc_m})  # fmt: skip

    def load(self, scores, hp, opt_head, opt_mask, gen, dev):
        meta = json.loads(self.meta.read_text())
        t = load_file(str(self.tensors))
        scores.load({k[6:]: v for k, v in t.items() if k.startswith("score.")})
        with torch.no_grad():
            for j, p in enumerate(hp):
                p.copy_(t[f"head.{j}"].to(p.device))
        best = (
            meta["best"],
            {k[11:]: v for k, v in t.items() if k.startswith("best.score.")},
            {k[10:]: v for k, v in t.items() if k.startswith("best.head.")},
        )
        self._load_opt("opt_head", opt_head, t, meta.get("opt_head", {}), dev)
        self._load_opt("opt_mask", opt_mask, t, meta.get("opt_mask", {}), dev)
        gen.set_state(t["rng"])
        return meta["epoch"], meta["history"], best
