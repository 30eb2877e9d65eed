"""CARTL's transfer side: non-expansive fine-tuning (NEFT) of the last k blocks.

Reference: Chen, Hu, Wang, Li, Wang, Shen, Li, "Cooperative and Adversarially-Robust Transfer
Learning" (CARTL), ICML 2021 (spec: ``shared/specs/cartl.md``). The source side (adversarial training,
FDM) lives in :mod:`safereuse.objectives`; the paper's *Vanilla* baseline is ``finetune-last-k``.

A robust (adversarially trained) teacher is transferred by fine-tuning only its last ``k`` blocks
(``model.blocks()``, head included); the first ``L − k`` stay frozen. NEFT keeps the fine-tuned part
from amplifying perturbations:

- **Spectral normalisation** of every ``nn.Conv{1,2,3}d`` / ``nn.Linear`` anywhere inside the
  fine-tuned blocks (nested containers included — the original code misses convs in nested
  ``Sequential`` s and normalises only the fc of its ResNet): ``W* = β · W / σ(W)`` through
  ``torch.nn.utils.parametrize``, σ estimated by one power iteration per *training* forward
  (persistent ``u`` / ``v`` buffers; none in eval). The optimiser sees the unnormalised ``W``
  (``parametrizations.weight.original``), so weight decay acts on it, as in the original.

  ``sigma="reshape"`` (the original): σ of the kernel as a ``C_out × C_in·k·k`` matrix.
  ``sigma="operator"``: σ of the convolution as the linear map it is on the layer's actual input
  size (stride, padding, dilation, groups included), by power iteration through ``conv`` and
  ``conv_transpose``; this is the layer's true Lipschitz constant, which the reshaped norm only
  approximates (it can be smaller or larger by up to a factor √(k·k)).
- **Convex residuals** (``convex_residual``, on by default as in the original): inside fine-tuned
  residual blocks ``shortcut + F(x)`` becomes ``0.5 · shortcut + 0.5 · F(x)``. The blocks come from
  the model contract (:meth:`~safereuse.models.ReusableModel.residual_blocks`: by default every
  module whose forward ends in ``a + b`` or ``ReLU(a + b)``, found by tracing, so a foreign model
  behind ``adapt`` has them too). They end in a positively homogeneous function of the sum (ReLU,
  or nothing), so the convex sum is the block output times 0.5: a forward hook, no custom layer
  class. After training the factors are folded into the weights: the zoo's blocks
  (:class:`~safereuse.models.resnet.BasicBlock`, :class:`~safereuse.models.resnet.Bottleneck`,
  :class:`~safereuse.models.wide_resnet.WideBasicBlock`) by their known layout, any other block
  through its traced graph (each operand of the sum must come from a BatchNorm, Conv or Linear, or
  be the input itself); a block that cannot be folded is refused before training. The student's
  ``info`` lists the blocks that were changed.
- **BatchNorm**, the paper's four cases (same names as ``finetune-last-k``): ``bn_stats`` —
  ``update`` or ``freeze`` (reuse) the source statistics of the frozen extractor's BatchNorm layers;
  ``bn_affine`` — ``train`` or ``freeze`` the affine (weight, bias) of BatchNorm layers in the
  fine-tuned part. Defaults follow the original script's NEFT run: freeze affine, update statistics.
  :func:`safereuse.train.fit` re-applies both at the start of every epoch and its evaluation restores
  every module's mode (the original silently returned to train mode after epoch 1).

**Folding.** At the end the student becomes an ordinary model with the same architecture: every
parametrization is removed with ``leave_parametrized=True`` (σ is first refined to convergence by
power iteration, so the saved ``‖W*‖₂ ≤ β`` holds to 1e-3; the student's ``info`` records the
largest relative correction this made to a training-time σ), and the 0.5 factors are folded into weights
exactly: a block whose shortcut has a conv + BN scales both branches' last BatchNorm affine by 0.5;
an identity-shortcut block instead passes a factor 2 on (its output is twice the convex one), which the
next fine-tuned unit absorbs on its input side (its first convs ÷ 2 — powers of two, so exact —, the
input-side BatchNorm's running statistics for pre-activation blocks, or the head ÷ 2). The saved
student reloads and predicts like the trained one (``tests/test_cartl.py``). A WRN whose fine-tuned
blocks all have identity shortcuts then carries the factors in its BatchNorm weights, not its convs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from ..data import DataBundle
from ..device import model_device
from ..errors import SafeReuseError
from ..models import ReusableModel
from ..models.contract import residual_sum
from ..models.resnet import BasicBlock, Bottleneck
from ..models.wide_resnet import WideBasicBlock
from ..train import FitConfig, FitResult, fit
from ..utils import analysis_mode
from .base import METHODS, Prepared, TransferMethod

SigmaMode = Literal["reshape", "operator"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = nn.modules.batchnorm._BatchNorm


# -- spectral normalisation ------------------------------------------------------------------------


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm().clamp_min(1e-12)


class SpectralScale(nn.Module):
    """Parametrization ``W ↦ β · W / σ(W)``, σ by power iteration (NEFT, CARTL §4.2).

    One power-iteration step runs per forward in training mode (``u``, ``v`` are persistent
    buffers, so the estimate improves as training goes on and survives checkpoints); in eval mode σ
    is read from the stored vectors, ``σ = ⟨u, A v⟩``, differentiable in ``W`` as in
    :func:`torch.nn.utils.parametrizations.spectral_norm`.

    Args:
        weight: the layer's current weight (shape, device, dtype).
        beta: target spectral norm β ∈ (0, 1].
        operator: ``None`` for the matrix view (``W`` reshaped to ``C_out × rest``); for a conv,
            ``(in_shape, stride, padding, dilation, groups)`` to use the convolution operator on
            inputs of shape ``in_shape`` (``C_in, *spatial``).
        generator: CPU RNG of the initial vectors.

    Example:
        >>> w = torch.diag(torch.tensor([3.0, 1.0]))
        >>> p = SpectralScale(w, beta=0.5)
        >>> p.converge(w)
        >>> round(float(torch.linalg.matrix_norm(p.eval()(w), 2)), 4)
        0.5
    """

    def __init__(
        self,
        weight: torch.Tensor,
        beta: float,
        operator: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], int]
        | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.beta = float(beta)
        self.operator = operator
        if operator is None:
            u_shape: tuple[int, ...] = (weight.shape[0],)
            v_shape: tuple[int, ...] = (weight[0].numel(),)
        else:
            in_shape = operator[0]
            v_shape = (1, *in_shape)
            with torch.no_grad():
                u_shape = tuple(
                    self._op(weight, torch.zeros(v_shape, dtype=weight.dtype, device=weight.device)).shape
                )
        u = _unit(torch.randn(u_shape, generator=generator))
        v = _unit(torch.randn(v_shape, generator=generator))
        self.register_buffer("u", u.to(device=weight.device, dtype=weight.dtype))
        self.register_buffer("v", v.to(device=weight.device, dtype=weight.dtype))

    # A: the linear map whose largest singular value is σ; At: its adjoint.
    def _op(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.operator is None:
            return w.reshape(w.shape[0], -1) @ v
        _, stride, padding, dilation, groups = self.operator
        conv = (F.conv1d, F.conv2d, F.conv3d)[w.dim() - 3]
        return conv(v, w, None, stride, padding, dilation, groups)

    def _adjoint(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.operator is None:
            return w.reshape(w.shape[0], -1).t() @ u
        in_shape, stride, padding, dilation, groups = self.operator
        k = w.shape[2:]
        # output_padding recovers the exact input size that the strided conv rounded down
        out_pad = tuple(
            in_shape[1 + i]
            - ((u.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
            for i in range(len(k))
        )
        convt = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[w.dim() - 3]
        return convt(u, w, None, stride, padding, out_pad, groups, dilation)

    @torch.no_grad()
    def iterate(self, weight: torch.Tensor, steps: int = 1) -> None:
        """``steps`` power-iteration steps on ``weight`` (updates ``u`` and ``v`` in place)."""
        w = weight.detach()
        for _ in range(steps):
            self.v.copy_(_unit(self._adjoint(w, self.u)))
            self.u.copy_(_unit(self._op(w, self.v)))

    @torch.no_grad()
    def converge(self, weight: torch.Tensor, max_steps: int = 1000, tol: float = 1e-6) -> None:
        """Power-iterate until σ changes by less than ``tol`` (relative), at most ``max_steps``."""
        last = float("nan")
        for _ in range(0, max_steps, 10):
            self.iterate(weight, 10)
            s = float(self.sigma(weight))
            if abs(s - last) <= tol * abs(s):
                break
            last = s

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The current estimate ``⟨u, A v⟩`` of the largest singular value (differentiable in W)."""
        # clones: the buffers are updated in place by the next training forward, possibly before
        # this graph's backward (e.g. several forwards per step)
        u = self.u.clone(memory_format=torch.contiguous_format)
        v = self.v.clone(memory_format=torch.contiguous_format)
        return (u * self._op(weight, v)).sum()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.iterate(weight, 1)
        return weight * (self.beta / self.sigma(weight))


def neft_layers(model: ReusableModel, k: int) -> list[tuple[str, nn.Module]]:
    """Every Conv / Linear inside the last ``k`` blocks of ``model.blocks()``, at any depth.

    Args:
        model: a model implementing the contract.
        k: trailing blocks (1 = the head only).

    Returns:
        ``(dotted name, module)`` pairs in definition order.

    Example:
        >>> from safereuse.models import create_model
        >>> [n for n, _ in neft_layers(create_model("resnet8"), 2)]
        ['layer3.0.conv1', 'layer3.0.conv2', 'layer3.0.downsample.0', 'fc']
    """
    check_k(model, k)
    chosen = [part for n, _ in model.blocks()[-k:] for part in n.split("+")]
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _LAYERS) and any(name == c or name.startswith(c + ".") for c in chosen)
    ]


def check_k(model: ReusableModel, k: int) -> None:
    """A one-line error unless ``1 ≤ k ≤`` the number of blocks of ``model``."""
    n = len(model.blocks())
    if not 1 <= k <= n:
        raise SafeReuseError(
            f"k={k} is out of range: {type(model).__name__} has {n} blocks", fix=f"choose k between 1 and {n}"
        )


def _input_shapes(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of each layer, from one eval-mode forward of a zero image."""
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise SafeReuseError("sigma='operator' needs the model's input size", fix="use a ReusableModel")
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))

        return hook

    try:
        for name, m in layers:
            handles.append(m.register_forward_pre_hook(record(name)))
        with analysis_mode(model):
            model(torch.zeros(1, spec.channels, *spec.size, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return shapes


def apply_neft(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    beta: float,
    sigma: SigmaMode = "reshape",
    generator: torch.Generator | None = None,
) -> None:
    """Reparameterise each layer's ``weight`` as ``β · W / σ(W)`` (:class:`SpectralScale`).

    The power iteration is run to convergence once here, so training starts from an accurate σ.
    Undo with :func:`fold_neft` (keep the normalised weights) or :func:`remove_neft` (restore W).

    Args:
        model: the model the layers belong to (its input size is needed for ``operator``).
        layers: ``(name, module)`` pairs, e.g. :func:`neft_layers`.
        beta: target spectral norm, in (0, 1].
        sigma: ``reshape`` (kernel as a matrix) or ``operator`` (the convolution operator).
        generator: CPU RNG of the power-iteration start vectors.
    """
    if not (0.0 < float(beta) <= 1.0):
        raise SafeReuseError(f"beta={beta} is outside (0, 1]", fix="choose e.g. beta=0.5")
    if sigma not in ("reshape", "operator"):
        raise SafeReuseError(f"unknown sigma mode {sigma!r}", fix="use sigma=reshape or sigma=operator")
    shapes: dict[str, tuple[int, ...]] = {}
    if sigma == "operator" and any(isinstance(m, _CONV) for _, m in layers):
        for name, m in layers:
            if isinstance(m, _CONV) and (isinstance(m.padding, str) or m.padding_mode != "zeros"):
                raise SafeReuseError(
                    f"sigma='operator' supports numeric zero padding; {name} has padding "
                    f"{m.padding!r} ({m.padding_mode})",
                    fix="use sigma=reshape",
                )
        shapes = _input_shapes(model, layers)
    for name, m in layers:
        if parametrize.is_parametrized(m, "weight"):
            raise SafeReuseError(f"{name}.weight is already parametrized", fix="fold or remove it first")
        op = None
        if sigma == "operator" and isinstance(m, _CONV):
            if name not in shapes:
                raise SafeReuseError(f"{name} is not used by the model's forward", fix="use sigma=reshape")
            op = (shapes[name], tuple(m.stride), tuple(m.padding), tuple(m.dilation), m.groups)
        p = SpectralScale(m.weight.detach(), beta, op, generator)
        p.converge(m.weight.detach())
        p.train(m.training)
        parametrize.register_parametrization(m, "weight", p)


def _neft_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if parametrize.is_parametrized(m, "weight")
        and any(isinstance(p, SpectralScale) for p in m.parametrizations.weight)
    ]


@torch.no_grad()
def fold_neft(model: nn.Module, refine: bool = True) -> dict[str, float]:
    """Replace every NEFT parametrization by the plain weight ``β · W / σ`` it computes.

    Args:
        model: a model with :func:`apply_neft` parametrizations.
        refine: first run the power iteration to convergence, so ``‖W*‖₂ ≤ β`` holds for the saved
            weight and not only for the running estimate.

    Returns:
        Per folded layer, the relative change of σ made by the refinement (0 without it): how far
        the training-time estimate was from the converged one.
    """
    change: dict[str, float] = {}
    for name, m in _neft_modules(model):
        w = m.parametrizations.weight.original
        change[name] = 0.0
        for p in m.parametrizations.weight:
            if refine and isinstance(p, SpectralScale):
                before = float(p.sigma(w))
                p.converge(w)
                change[name] = abs(float(p.sigma(w)) - before) / max(abs(before), 1e-12)
            p.eval()  # the removal evaluates the parametrization once: no power-iteration step
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return change


def remove_neft(model: nn.Module) -> int:
    """Remove every NEFT parametrization and restore the unnormalised weights; returns the count."""
    mods = _neft_modules(model)
    for _, m in mods:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return len(mods)


@contextmanager
def neft(
    model: ReusableModel,
    k: int,
    beta: float = 1.0,
    sigma: SigmaMode = "reshape",
    *,
    fold: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[list[str]]:
    """NEFT on the last ``k`` blocks inside ``with``; on exit folded (``fold=True``) or removed.

    Args:
        model: the model to reparameterise in place.
        k: trailing blocks whose Conv / Linear layers are normalised.
        beta: target spectral norm β ∈ (0, 1].
        sigma: ``reshape`` or ``operator``.
        fold: keep the normalised weights on exit (otherwise the original weights come back).
        generator: CPU RNG of the power-iteration start vectors.

    Yields:
        The names of the normalised layers.

    Example:
        >>> from safereuse.models import create_model
        >>> m = create_model("resnet8")
        >>> with neft(m, k=1, beta=0.5) as names:
        ...     _ = m(torch.zeros(2, 1, 28, 28))
        >>> names, parametrize.is_parametrized(m.fc)
        (['fc'], False)
    """
    layers = neft_layers(model, k)
    apply_neft(model, layers, beta, sigma, generator)
    try:
        yield [n for n, _ in layers]
    finally:
        (fold_neft if fold else remove_neft)(model)


# -- convex residuals --------------------------------------------------------------------------------


def residual_blocks(model: ReusableModel, k: int) -> list[tuple[str, nn.Module]]:
    """The model's residual blocks (:meth:`ReusableModel.residual_blocks`, the model contract) inside
    the last ``k`` blocks.

    Example:
        >>> from safereuse.models import create_model
        >>> [n for n, _ in residual_blocks(create_model("resnet8"), 3)]
        ['layer2.0', 'layer3.0']
    """
    check_k(model, k)
    chosen = [part for n, _ in model.blocks()[-k:] for part in n.split("+")]
    return [
        (name, m)
        for name, m in model.residual_blocks()
        if any(name == c or name.startswith(c + ".") for c in chosen)
    ]


def _half(_m: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
    return out * 0.5


@contextmanager
def convex_residuals(blocks: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Inside ``with``, each block's ``shortcut + F(x)`` becomes ``0.5·shortcut + 0.5·F(x)``.

    Valid for the contract's residual blocks (their output is ReLU(sum) or the sum itself, and
    ``ReLU(0.5 s) = 0.5 ReLU(s)``): a forward hook halves the output. The hooks are removed on exit.
    """
    handles = []
    try:
        for _, m in blocks:
            handles.append(m.register_forward_hook(_half))
        yield
    finally:
        for h in handles:
            h.remove()


def _scale_affine(bn: nn.Module, f: float) -> None:
    if f != 1.0:
        bn.weight.mul_(f)
        bn.bias.mul_(f)


def _bn_input_scale(bn: nn.Module, s: float) -> None:
    """Make ``bn`` (eval mode) give on inputs ``s·x`` what it gave on ``x``."""
    if s != 1.0:
        eps = bn.eps
        bn.running_mean.mul_(s)
        bn.running_var.copy_((bn.running_var + eps) * s * s - eps)


def _foldable_bn(bn: Any, what: str, need_affine: bool = False, need_stats: bool = False) -> None:
    if not isinstance(bn, _BN) or (need_affine and not bn.affine) or (need_stats and bn.running_var is None):
        raise SafeReuseError(
            f"cannot fold the convex residual into {what}", fix="set convex_residual=false for this model"
        )


def _fold_unit(m: nn.Module, s: float, convex: set[int], dry: bool) -> float:
    """Fold one unit of the forward chain whose input is ``s`` × the true activation.

    Returns the scale of its output (relative to the true activation, with convex sums).
    """
    if isinstance(m, (BasicBlock, Bottleneck)):
        last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2
        ds = m.downsample
        if ds is not None and not (
            isinstance(ds, nn.Sequential)
            and len(ds) == 2
            and isinstance(ds[0], _CONV)
            and isinstance(ds[1], _BN)
        ):
            raise SafeReuseError(
                "cannot fold the convex residual: unknown shortcut", fix="set convex_residual=false"
            )
        half = 0.5 if id(m) in convex else 1.0
        if ds is not None:
            _foldable_bn(ds[1], "the shortcut BatchNorm", need_affine=half != 1.0)
            _foldable_bn(last_bn, "the residual BatchNorm", need_affine=half != 1.0)
            s_out, branch, short = 1.0, half, half
        else:
            # identity shortcut: the input's factor s stays on it; the block outputs (s / half)·x
            s_out = s / half
            branch, short = half * s_out, None
            _foldable_bn(last_bn, "the residual BatchNorm", need_affine=branch != 1.0)
        if not dry:
            m.conv1.weight.div_(s)  # both branches read the input: undo its factor first
            if ds is not None:
                ds[0].weight.div_(s)
                _scale_affine(ds[1], short)
            _scale_affine(last_bn, branch)
        return s_out
    if isinstance(m, WideBasicBlock):
        half = 0.5 if id(m) in convex else 1.0
        _foldable_bn(m.bn1, "the input BatchNorm", need_stats=s != 1.0)
        if m.convShortcut is not None:
            s_out, branch = 1.0, half
        else:
            s_out = s / half
            branch = half * s_out
        _foldable_bn(m.bn2, "the inner BatchNorm", need_affine=branch != 1.0)
        if not dry:
            _bn_input_scale(m.bn1, s)
            _scale_affine(m.bn2, branch)  # ReLU / LeakyReLU and conv2 are homogeneous
            if m.convShortcut is not None:
                m.convShortcut.weight.mul_(half)
        return s_out
    if id(m) in convex or (s != 1.0 and residual_sum(m) is not None):
        return _fold_traced_block(m, s, 0.5 if id(m) in convex else 1.0, dry)
    if s == 1.0:
        return 1.0
    if isinstance(m, _BN):
        _foldable_bn(m, "a BatchNorm", need_stats=True)
        if not dry:
            _bn_input_scale(m, s)
        return 1.0
    if isinstance(m, (*_CONV, nn.Linear)):
        if not dry:
            m.weight.div_(s)
        return 1.0
    if isinstance(m, nn.Sequential):
        for child in m:
            s = _fold_unit(child, s, convex, dry)
        return s
    raise SafeReuseError(
        f"cannot fold the convex residual through {type(m).__name__}", fix="set convex_residual=false"
    )


def _fold_traced_block(m: nn.Module, s: float, half: float, dry: bool) -> float:
    """:func:`_fold_unit` for a residual block outside the zoo, through its traced graph
    (:func:`~safereuse.models.contract.residual_sum`): undo the input's factor ``s`` in the layers that
    read the input, scale the last layer of each operand of the sum, carry ``s`` along an identity."""
    found = residual_sum(m)
    if found is None:
        raise SafeReuseError(
            f"cannot fold the convex residual through {type(m).__name__}", fix="set convex_residual=false"
        )
    graph, add, _ = found
    inp = next(n for n in graph.nodes if n.op == "placeholder")
    a, b = add.args[:2]
    if a is inp and b is inp:
        raise SafeReuseError("cannot fold the convex residual: x + x", fix="set convex_residual=false")
    if s != 1.0:
        for user in inp.users:
            if user is not add:
                _scale_input(_traced_edge(m, user), s, dry)
    if inp in (a, b):  # identity shortcut: the input's factor s stays on it
        s_out = s / half
        _scale_output(_traced_edge(m, b if a is inp else a), half * s_out, dry)
        return s_out
    for operand in (a, b):
        _scale_output(_traced_edge(m, operand), half, dry)
    return 1.0


def _traced_edge(m: nn.Module, node: Any) -> nn.Module:
    """The submodule a traced node calls (one ``call_module``), else a one-line refusal."""
    if getattr(node, "op", None) != "call_module":
        what = getattr(node, "name", node)
        raise SafeReuseError(
            f"cannot fold the convex residual of {type(m).__name__}: {what} is not a layer",
            fix="set convex_residual=false",
        )
    return m.get_submodule(str(node.target))


def _scale_input(layer: nn.Module, s: float, dry: bool) -> None:
    """Make ``layer`` (its first layer, for a ``Sequential``) give on ``s·x`` what it gave on ``x``."""
    while isinstance(layer, nn.Sequential) and len(layer):
        layer = layer[0]
    if isinstance(layer, _BN):
        _foldable_bn(layer, "a BatchNorm", need_stats=True)
        if not dry:
            _bn_input_scale(layer, s)
    elif isinstance(layer, (*_CONV, nn.Linear)):
        if not dry:
            layer.weight.div_(s)
    else:
        raise SafeReuseError(
            f"cannot fold the convex residual through {type(layer).__name__}", fix="set convex_residual=false"
        )


def _scale_output(layer: nn.Module, f: float, dry: bool) -> None:
    """Multiply ``layer``'s output (its last layer's, for a ``Sequential``) by ``f`` in its weights."""
    while isinstance(layer, nn.Sequential) and len(layer):
        layer = layer[-1]
    if isinstance(layer, _BN):
        _foldable_bn(layer, "the residual BatchNorm", need_affine=f != 1.0)
        if not dry:
            _scale_affine(layer, f)
    elif isinstance(layer, (*_CONV, nn.Linear)):
        if not dry and f != 1.0:
            layer.weight.mul_(f)
            if layer.bias is not None:
                layer.bias.mul_(f)
    else:
        raise SafeReuseError(
            f"cannot fold the convex residual through {type(layer).__name__}", fix="set convex_residual=false"
        )


@torch.no_grad()
def fold_convex_residuals(
    model: ReusableModel, k: int, blocks: list[tuple[str, nn.Module]], dry: bool = False
) -> None:
    """Fold the 0.5 factors of :func:`convex_residuals` into the weights of the last ``k`` blocks.

    Walks the fine-tuned blocks in forward order (our zoo models run ``blocks()`` one after the
    other, with only ReLU / pooling — positively homogeneous — between them) carrying the factor
    between the folded and the convex activations; see the module docstring.

    Args:
        model: the trained model (plain weights: fold NEFT first).
        k: the fine-tuned trailing blocks.
        blocks: the residual blocks that were made convex.
        dry: only check that the fold is possible (raises :class:`SafeReuseError` otherwise).
    """
    convex = {id(m) for _, m in blocks}
    if not convex:
        return
    s = 1.0
    for name, _ in model.blocks()[-k:]:
        for part in name.split("+"):
            s = _fold_unit(model.get_submodule(part), s, convex, dry)
    if s != 1.0:
        raise SafeReuseError("cannot fold the convex residual: the head is not the last block")


# -- the method ----------------------------------------------------------------------------------------


@dataclass
class _CARTLPrepared(Prepared):
    convex: list[tuple[str, nn.Module]] = field(default_factory=list)


@METHODS.register("cartl", "CARTL's NEFT: last-k fine-tuning with spectrally normalised weights (β)")
@dataclass
class CARTL(TransferMethod):
    """NEFT transfer of a (robust) teacher (Chen et al., CARTL, ICML 2021; see the module docstring).

    Args:
        k: trailing blocks to fine-tune (``model.blocks()``, head included; 1 = head only).
        beta: spectral-norm bound β ∈ (0, 1] of every Conv / Linear in them (paper: 0.4–1.0).
        sigma: ``reshape`` (kernel as ``C_out × C_in·k·k``, the original) or ``operator`` (the
            exact norm of the convolution operator on the layer's input size).
        convex_residual: ``0.5·shortcut + 0.5·F(x)`` in fine-tuned residual blocks of our zoo.
        bn_stats: ``update`` or ``freeze`` (reuse) the running statistics of the frozen blocks'
            BatchNorm layers.
        bn_affine: ``train`` or ``freeze`` the BatchNorm affine parameters of the fine-tuned blocks.
        neft_head: normalise the head block's layers too (the original does); ``false`` leaves the
            new head free — an ablation: with few, low-dimensional features a head bounded by β
            spans only small logits, so cross-entropy can barely move (``docs/results/cartl.md``).

    The student's ``info`` records the normalised layers, the convex blocks and the folded σ's.

    Example:
        >>> CARTL(k=3, beta=0.4, sigma="operator").config()["beta"]
        0.4
    """

    k: Annotated[int, Field(ge=1)] = 2
    beta: Annotated[float, Field(gt=0, le=1)] = 0.5
    sigma: SigmaMode = "reshape"
    convex_residual: bool = True
    bn_stats: Literal["update", "freeze"] = "update"
    bn_affine: Literal["train", "freeze"] = "freeze"
    neft_head: bool = True

    def fit_config(self, seed: int, device: str, progress: bool, **overrides: Any) -> FitConfig:
        return super().fit_config(seed, device, progress, train_last_k=self.k, **overrides)

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        check_k(model, self.k)
        model.reset_head(data.num_classes, seed=seed)
        convex = residual_blocks(model, self.k) if self.convex_residual else []
        fold_convex_residuals(model, self.k, convex, dry=True)  # refuse before training, not after
        layers = neft_layers(model, self.k)
        if not self.neft_head:
            head = set(neft_layers(model, 1))
            layers = [nm for nm in layers if nm not in head]
        apply_neft(model, layers, self.beta, self.sigma, torch.Generator().manual_seed(seed))
        info = {"neft_layers": [n for n, _ in layers], "convex_blocks": [n for n, _ in convex]}
        return _CARTLPrepared(model, info=info, convex=convex)

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        assert isinstance(prepared, _CARTLPrepared)
        model = prepared.model
        try:
            with convex_residuals(prepared.convex):
                result = fit(model, data.train, data.val, cfg, checkpoint_dir=checkpoint_dir)
        finally:
            change = fold_neft(model)  # also on failure: the model never leaves with parametrizations
        fold_convex_residuals(model, self.k, prepared.convex)
        prepared.info["sigma_refine_max"] = max(change.values(), default=0.0)
        return result
