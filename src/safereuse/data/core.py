"""Dataset specs, splits and the in-memory bundle every method consumes.

All images are held as ``float32`` tensors ``[N, C, H, W]`` in ``[0, 1]`` pixel space; normalisation
is the model's job (see :mod:`safereuse.models.contract`). The small datasets this project targets
fit comfortably in memory, which keeps the training loop free of per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from ..errors import SafeReuseError


@dataclass
class RawData:
    """A dataset as its source provides it: pixel tensors in [0, 1] and integer labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    source: str = ""


@dataclass
class DataSpec:
    """What slice of a dataset to use; saved in every manifest so a result can be re-made.

    Args:
        name: registry name (``fashion-mnist``, ``digits``, ``imagefolder:PATH``).
        classes: original class ids to keep, relabelled 0..k-1 in the given order (None = all).
        train_size: limit on training examples (total, stratified) or per class (``per_class``).
        per_class: read ``train_size`` as a per-class count.
        val_fraction: share of the (limited) training set carved out for validation.
        seed: seed of the subsampling and the validation split.
        data_dir: extra folder to look in first.
        holdout: images held back from the training pool before ``train_size`` sampling, as a
            selection split (``DataBundle.holdout``) for choosing hyper-parameters without the test
            split; stratified, and the same images for every ``seed`` (see :func:`build_bundle`).
            Left out of :meth:`to_dict` when 0, so specs without one keep their ids.
        max_len: text data only: the token length texts are padded / truncated to (None: the
            dataset's default, :data:`safereuse.data.text.MAX_LEN`); left out of :meth:`to_dict`
            when None, so existing recipes keep their ids. Checked by :func:`safereuse.data.load_data`.

    Example:
        >>> DataSpec("digits", classes=[0, 1], holdout=0).to_dict()["classes"]
        [0, 1]
        >>> "holdout" in DataSpec("digits").to_dict(), DataSpec("digits", holdout=50).to_dict()["holdout"]
        (False, 50)
    """

    name: str
    classes: list[int] | None = None
    train_size: Annotated[int, Field(ge=1)] | None = None
    per_class: bool = False
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    seed: int = 0
    data_dir: str | None = None
    holdout: int = 0
    max_len: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that define the slice (``data_dir`` left out; ``holdout``, ``max_len`` only
        when set)."""
        d = dict(self.__dict__)
        d.pop("data_dir")
        if not d.get("holdout"):
            d.pop("holdout", None)
        if d.get("max_len") is None:
            d.pop("max_len", None)
        return d


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    """Train / validation / test splits of one dataset slice plus its metadata.

    ``holdout`` is the selection split when the spec asks for one (``DataSpec.holdout``), else None.
    """

    spec: DataSpec
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)
    holdout: Split | None = None

    def holdout_view(self) -> DataBundle:
        """This bundle with its holdout in place of the test split: what hyper-parameter selection
        evaluates (an audit of the view never sees the test images). Tensors are shared, not copied.

        Raises:
            SafeReuseError: the bundle has no holdout.

        Example:
            >>> b = build_bundle(RawData(torch.rand(40, 1, 4, 4), torch.arange(40) % 2,
            ...                          torch.rand(6, 1, 4, 4), torch.arange(6) % 2, ["a", "b"]),
            ...                  DataSpec("toy", holdout=10))
            >>> v = b.holdout_view()
            >>> len(v.test), v.test is b.holdout, len(b.test)
            (10, True, 6)
        """
        if self.holdout is None:
            raise SafeReuseError(
                f"{self.spec.name} has no holdout split", fix="set DataSpec.holdout (spec: select.holdout)"
            )
        return replace(self, test=self.holdout)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])


def parse_classes(text: str | int | list[int] | tuple[int, ...] | None) -> list[int] | None:
    """Parse a class list as the CLI and specs write it.

    Args:
        text: ``"0-4"`` → [0..4]; ``"1,3,5"`` → [1, 3, 5]; ``"0-2,7"`` → [0, 1, 2, 7]; a list, tuple
            or single int is checked and passed through; None means all classes.

    Returns:
        The class ids in the given order, or None.

    Raises:
        SafeReuseError: the text is malformed, names no class, repeats one or is negative.
    """
    if text is None:
        return None
    out: list[int] = []
    if isinstance(text, (list, tuple, int)) and not isinstance(text, bool):
        items = [text] if isinstance(text, int) else list(text)
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise SafeReuseError(f"classes {text!r} must be integers", fix="write e.g. [0, 1, 2] or 0-2")
            out.append(int(v))
    else:
        try:
            for part in str(text).split(","):
                part = part.strip()
                if not part:
                    continue
                if "-" in part:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    out += list(range(lo, hi + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise SafeReuseError(
                f"--classes {text!r} is not a class list", fix="write e.g. 0-4 or 1,3,5"
            ) from None
    if not out:
        raise SafeReuseError("the class set is empty", fix="name at least one class, e.g. --classes 0-4")
    if any(c < 0 for c in out):
        raise SafeReuseError(f"classes {text!r} include a negative id", fix="class ids start at 0")
    if len(set(out)) != len(out):
        raise SafeReuseError(f"--classes {text!r} repeats a class", fix="name each class once")
    return out


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise when ``x`` holds NaN or Inf.

    Args:
        x: a batch ``[N, ...]``.
        what: how the error names the data, e.g. ``"digits training data"``.

    Raises:
        SafeReuseError: naming the number of bad images and the first one.
    """
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad_rows = (~torch.isfinite(x)).reshape(len(x), -1).any(1)
        first = int(torch.nonzero(bad_rows)[0])
        raise SafeReuseError(
            f"{what} contains NaN or Inf in {int(bad_rows.sum())} images (first: index {first})",
            fix="clean or drop those inputs",
        )


def _check_raw(raw: RawData, name: str) -> None:
    n_all = len(raw.class_names)
    for x, y, split in ((raw.train_x, raw.train_y, "training"), (raw.test_x, raw.test_y, "test")):
        text = not x.is_floating_point()  # token ids [N, L] (safereuse.data.text)
        if x.dim() != (2 if text else 4) or len(x) != len(y):
            raise SafeReuseError(
                f"{name} {split} data has inputs {tuple(x.shape)} and labels {tuple(y.shape)}",
                fix="images must be [N, C, H, W] floats, texts [N, L] token ids, with one label each",
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_all):
            raise SafeReuseError(
                f"{name} {split} labels span {int(y.min())}-{int(y.max())} but there are {n_all} class names",
                fix="labels must be 0..(number of classes - 1)",
            )
        check_finite(x, f"{name} {split} data")


_SHUFFLE_STREAM = 2**32 - 1  # the order of the training split; class streams use the class id
_HOLDOUT_TAG = 0x686F6C64  # "hold": the holdout's streams, which no seed reaches (see _holdout_rng)


def _seed_rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per (seed, purpose): the sample of a class does not depend on which other
    # classes are selected, nor on their order.
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, stream])


def _holdout_rng(stream: int) -> np.random.Generator:
    # Seed-independent, like the test split: every seed of a run is selected on the same images (a
    # paired comparison, and one crafted defect set per teacher). Three words so no [seed, stream] pair
    # of _seed_rng can produce the same state.
    return np.random.default_rng([_HOLDOUT_TAG, stream, _HOLDOUT_TAG])


def _largest_remainder(sizes: list[int], want: int) -> list[int]:
    """Split ``want`` over classes in proportion to ``sizes``, summing exactly to ``want`` (largest
    remainders first, ties to the lower class index)."""
    total = sum(sizes)
    exact = [want * n / total for n in sizes]
    quotas = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: want - sum(quotas)]:
        quotas[i] += 1
    return quotas


def _stratified_quotas(sizes: list[int], want: int) -> list[int]:
    """Split ``want`` over classes in proportion to ``sizes``, summing exactly to ``want``.

    Largest-remainder rounding (ties to the lower class index), then every class gets at least one
    example, taken from the classes with the most.
    """
    quotas = _largest_remainder(sizes, want)
    for i, q in enumerate(quotas):
        if q == 0:
            donor = max(range(len(quotas)), key=lambda j: (quotas[j], -j))
            quotas[donor] -= 1
            quotas[i] = 1
    return quotas


def build_bundle(raw: RawData, spec: DataSpec) -> DataBundle:
    """Apply class subset, holdout, size limit and the validation split to ``raw`` (deterministic).

    * ``classes`` keeps those original classes, relabelled 0..k-1 in the given order.
    * ``holdout`` images are taken out of the training pool first (stratified by largest remainder
      over the class sizes, drawn with streams that do not depend on ``seed``): the selection split
      ``bundle.holdout``, disjoint from train, validation and test. With ``holdout`` 0 nothing changes.
    * ``train_size`` limits the training pool (train + validation): a total spread over the classes in
      proportion to their sizes (exact total, at least one per class), or with ``per_class`` a
      per-class cap. Each class is shuffled with its own stream of ``seed``, so the examples drawn for
      a class depend only on (seed, class), and a smaller ``train_size`` takes a subset of a larger one.
    * ``val_fraction`` of each class's pool goes to validation (at least one when the class has two or
      more examples and the fraction is positive; at least one always stays in train).
    * The test split is the source's test split restricted to ``classes``: it never depends on
      ``seed``, ``train_size`` or ``val_fraction``.
    * ``mean``/``std`` are per-channel statistics of the training split only.

    Args:
        raw: the source data (images in [0, 1]).
        spec: the slice to take.

    Returns:
        The :class:`DataBundle`.

    Raises:
        SafeReuseError: classes out of range, empty or repeated; a class without training images; a bad
            ``train_size``/``val_fraction``/``seed``/``holdout`` (or one that leaves a class without
            training images); NaN or Inf in the data; malformed raw tensors.
    """
    n_all = len(raw.class_names)
    classes = parse_classes(spec.classes)
    if classes is None:
        classes = list(range(n_all))
    bad = [c for c in classes if not 0 <= c < n_all]
    if bad:
        raise SafeReuseError(
            f"classes {bad} are out of range for {spec.name} ({n_all} classes: 0-{n_all - 1})",
            fix=f"choose classes between 0 and {n_all - 1}",
        )
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, (int, np.integer)):
        raise SafeReuseError(f"seed {spec.seed!r} is not an integer", fix="pass e.g. --seed 0")
    size = spec.train_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise SafeReuseError(
            f"train_size {size!r} must be a positive integer", fix="pass e.g. --train-size 1000"
        )
    hold = spec.holdout
    if isinstance(hold, bool) or not isinstance(hold, (int, np.integer)) or hold < 0:
        raise SafeReuseError(
            f"holdout {hold!r} must be a non-negative integer", fix="use e.g. 500 (0 = no holdout)"
        )
    if not 0.0 <= float(spec.val_fraction) < 1.0:
        raise SafeReuseError(f"val_fraction {spec.val_fraction} must be in [0, 1)", fix="use e.g. 0.1")
    _check_raw(raw, spec.name)

    train_y = raw.train_y.numpy()
    per_cls: list[np.ndarray] = []
    for c in classes:
        idx = np.flatnonzero(train_y == c)
        per_cls.append(idx[_seed_rng(int(spec.seed), c).permutation(len(idx))])
    empty = [classes[i] for i, idx in enumerate(per_cls) if len(idx) == 0]
    if empty:
        raise SafeReuseError(f"classes {empty} have no training images in {spec.name}", fix="drop them")
    hold_idx: list[np.ndarray] = []
    if hold:
        sizes = [len(i) for i in per_cls]
        quotas = _largest_remainder(sizes, min(int(hold), sum(sizes)))
        short = [c for c, q, n in zip(classes, quotas, sizes, strict=True) if q >= n]
        if short:
            raise SafeReuseError(
                f"holdout {hold} leaves classes {short} of {spec.name} without training images",
                fix=f"use a holdout well below the {sum(sizes)} training images",
            )
        for i, (c, q) in enumerate(zip(classes, quotas, strict=True)):
            pool = np.sort(per_cls[i])
            taken = pool[_holdout_rng(c).permutation(len(pool))[:q]]
            hold_idx.append(taken)
            per_cls[i] = per_cls[i][~np.isin(per_cls[i], taken)]  # the seed's order, minus the holdout
    if spec.train_size is not None:
        if spec.per_class:
            quotas = [min(int(spec.train_size), len(i)) for i in per_cls]
        else:
            sizes = [len(i) for i in per_cls]
            want = min(int(spec.train_size), sum(sizes))
            if want < len(classes):
                raise SafeReuseError(
                    f"train_size {spec.train_size} is smaller than the {len(classes)} classes",
                    fix=f"use --train-size ≥ {len(classes)}, or --per-class",
                )
            quotas = _stratified_quotas(sizes, want)
        per_cls = [idx[:q] for idx, q in zip(per_cls, quotas, strict=True)]
    tr_idx, va_idx = [], []
    for idx in per_cls:
        n_val = int(round(len(idx) * spec.val_fraction))
        if spec.val_fraction > 0 and len(idx) >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, len(idx) - 1)
        va_idx.append(idx[:n_val])
        tr_idx.append(idx[n_val:])
    tr = np.concatenate(tr_idx)
    tr = torch.from_numpy(tr[_seed_rng(int(spec.seed), _SHUFFLE_STREAM).permutation(len(tr))])
    va = torch.from_numpy(np.concatenate(va_idx))

    remap = torch.full((n_all,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    train_split = Split(raw.train_x[tr].contiguous(), remap[raw.train_y[tr]])
    val_split = Split(raw.train_x[va].contiguous(), remap[raw.train_y[va]])
    keep = torch.from_numpy(np.flatnonzero(np.isin(raw.test_y.numpy(), classes)))
    test = Split(raw.test_x[keep].contiguous(), remap[raw.test_y[keep]])
    holdout = None
    if hold:
        ho = np.concatenate(hold_idx)
        ho = torch.from_numpy(ho[_holdout_rng(_SHUFFLE_STREAM).permutation(len(ho))])
        holdout = Split(raw.train_x[ho].contiguous(), remap[raw.train_y[ho]])

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if train_split.x.is_floating_point():  # token ids (text) have no pixel statistics
        dims = [0, 2, 3]
        mean = tuple(float(v) for v in train_split.x.mean(dim=dims))
        std = tuple(max(float(v), 1e-6) for v in train_split.x.std(dim=dims, correction=0))
    names = [raw.class_names[c] for c in classes]
    return DataBundle(spec, train_split, val_split, test, names, mean, std, holdout)
