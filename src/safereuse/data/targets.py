"""Target problems: the part of a model's task that a reuser needs (SeaM's direct reuse).

Reference: Qi et al., "Reusing Deep Neural Network Models through Model Re-engineering", ICSE 2023
(spec: ``shared/specs/seam.md``).

- **binary**: one class (relabelled 0) against an equal-sized sample of the other classes
  (relabelled 1). The sample is drawn once per split with a fixed seed, the same way for train,
  validation and test.
- **multi-class**: a group of classes (e.g. ``5-9``, or a CIFAR-100 superclass's fine classes from
  :func:`safereuse.data.cifar100_superclass`), relabelled ``0..k-1`` in the given order.

The original model is scored on the same problem by the artifact's rules
(:meth:`TargetProblem.original_correct`): binary — correct iff ``(pred == target) == (y == target)``;
multi-class — argmax over *all* its classes, correct only on the exact class. The multi-class rule
favours SeaM (the re-engineered model chooses among the group only, the original among all classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import DataBundle, Split

__all__ = ["TargetProblem", "target_problem"]

#: Stream of the fixed "other classes" sample (independent of every run's seed).
_OTHERS_SEED = 20230514


@dataclass
class TargetSplit:
    """One split of a target problem: relabelled images plus the model's own labels for them.

    Attributes:
        x: images.
        y: target labels (``0..k-1``; binary: 0 = the target class, 1 = the others).
        source_y: the same images' labels in the model's class indices.
    """

    x: torch.Tensor
    y: torch.Tensor
    source_y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def split(self) -> Split:
        return Split(self.x, self.y)


@dataclass
class TargetProblem:
    """A target problem over a model's classes (build it with :func:`target_problem`).

    Attributes:
        problem_type: ``binary`` or ``multiclass``.
        classes: the model's class indices the problem is about (binary: the one target class).
        train / val / test: :class:`TargetSplit` each.
        class_names: names of the target labels.
    """

    problem_type: Literal["binary", "multiclass"]
    classes: list[int]
    train: TargetSplit
    val: TargetSplit
    test: TargetSplit
    class_names: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return 2 if self.problem_type == "binary" else len(self.classes)

    def original_correct(self, logits: torch.Tensor, split: TargetSplit) -> torch.Tensor:
        """Which images of ``split`` the original model gets right on this problem (bool per image).

        Args:
            logits: the original model's logits over all its classes, one row per image of ``split``.
            split: the split they were computed on.

        Example:
            >>> src = torch.tensor([3, 3, 1, 2])
            >>> s = TargetSplit(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]), src)
            >>> p = TargetProblem("binary", [3], s, s, s)
            >>> logits = torch.nn.functional.one_hot(torch.tensor([3, 0, 2, 3]), 5).float()
            >>> p.original_correct(logits, s).tolist()  # 3→3 ✓, 3→0 ✗, 1→2 ✓ (both "other"), 2→3 ✗
            [True, False, True, False]
        """
        pred = logits.argmax(1).cpu()
        src = split.source_y.cpu()
        if self.problem_type == "binary":
            t = self.classes[0]
            return (pred == t) == (src == t)
        return pred == src


def _binary_split(split: Split, target: int, stream: int) -> TargetSplit:
    pos = torch.nonzero(split.y == target).squeeze(1)
    others = torch.nonzero(split.y != target).squeeze(1)
    rng = np.random.default_rng([_OTHERS_SEED, stream])
    k = min(len(pos), len(others))
    pick = torch.from_numpy(np.sort(rng.choice(len(others), size=k, replace=False))).long()
    idx = torch.cat([pos, others[pick]]).sort().values
    y = (split.y[idx] != target).long()
    return TargetSplit(split.x[idx], y, split.y[idx].clone())


def _group_split(split: Split, classes: Sequence[int]) -> TargetSplit:
    lut = torch.full((int(max(int(split.y.max()) if len(split.y) else 0, max(classes))) + 1,), -1)
    for i, c in enumerate(classes):
        lut[c] = i
    keep = torch.nonzero(lut[split.y] >= 0).squeeze(1) if len(split.y) else torch.zeros(0, dtype=torch.long)
    return TargetSplit(split.x[keep], lut[split.y[keep]], split.y[keep].clone())


def target_problem(
    data: DataBundle, classes: Sequence[int] | int, binary: bool = False, num_classes: int | None = None
) -> TargetProblem:
    """The target problem of ``classes`` over ``data`` (whose labels are the model's class indices).

    Args:
        data: the data the model was trained on (labels ``0..C-1`` are the model's classes).
        classes: the model's class indices: one class (binary) or a group (multi-class).
        binary: one class vs an equal-sized fixed-seed sample of the others (needs one class).
        num_classes: the model's class count ``C`` (default: ``data.num_classes``).

    Returns:
        The :class:`TargetProblem`.

    Raises:
        SafeReuseError: a class outside ``0..C-1``, repeated classes, binary with several classes,
            a group of one class, or a split left empty.

    Example:
        >>> from safereuse.data import load_data
        >>> d = load_data("digits", classes=[0, 1, 2, 3])
        >>> p = target_problem(d, [2], binary=True)
        >>> p.num_classes, int((p.train.y == 0).sum()) == int((p.train.y == 1).sum())
        (2, True)
        >>> q = target_problem(d, [3, 1])
        >>> q.class_names, sorted(set(q.test.source_y.tolist()))
        (['3', '1'], [1, 3])
    """
    c_all = data.num_classes if num_classes is None else num_classes
    cls = [classes] if isinstance(classes, int) else [int(c) for c in classes]
    bad = [c for c in cls if not 0 <= c < c_all]
    if not cls:
        raise SafeReuseError("the target problem names no class", fix="pass e.g. --target-classes 3")
    if bad:
        raise SafeReuseError(
            f"target class {bad[0]} is outside the model's classes (0..{c_all - 1})",
            fix="choose target classes the model was trained on",
        )
    if len(set(cls)) != len(cls):
        raise SafeReuseError("the target classes repeat a class", fix="name each class once")
    if binary and len(cls) != 1:
        raise SafeReuseError(
            f"a binary target problem takes one class, not {len(cls)}", fix="drop --binary or name one class"
        )
    if not binary and len(cls) < 2:
        raise SafeReuseError(
            "a multi-class target problem needs at least two classes",
            fix="add --binary for one class against the others, or name a group such as 5-9",
        )
    names = data.class_names
    splits = {}
    for stream, (what, sp) in enumerate((("train", data.train), ("val", data.val), ("test", data.test))):
        ts = _binary_split(sp, cls[0], stream) if binary else _group_split(sp, cls)
        if len(ts) == 0 or (binary and (not (ts.y == 0).any() or not (ts.y == 1).any())):
            raise SafeReuseError(
                f"the target problem's {what} split is empty (no images of classes {cls})",
                fix="choose classes present in the data, or more data",
            )
        splits[what] = ts
    if binary:
        target_names = [names[cls[0]] if cls[0] < len(names) else str(cls[0]), "other"]
    else:
        target_names = [names[c] if c < len(names) else str(c) for c in cls]
    return TargetProblem("binary" if binary else "multiclass", cls, **splits, class_names=target_names)
