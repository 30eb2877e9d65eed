"""A fitted decision tree as plain arrays: saved as safetensors, applied with tensor ops (no pickle).

scikit-learn fits the tree (:class:`sklearn.tree.DecisionTreeClassifier`); :class:`TreeArrays` keeps
what prediction needs — per node the split feature, the threshold, the two children and the class
distribution — so a detector can be stored as safetensors + JSON and applied to a batch with one
gather per tree level (no Python loop over samples). The split rule is scikit-learn's:
``x[feature] <= threshold`` goes left, compared in float64 on float32 features, so predictions
equal ``DecisionTreeClassifier.predict`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SafeReuseError


@dataclass
class TreeArrays:
    """A decision tree over ``n_features`` features and ``n_classes`` classes.

    Attributes:
        feature: ``[nodes]`` int64 split feature (−2 at leaves, as scikit-learn writes it).
        threshold: ``[nodes]`` float64 split threshold.
        left, right: ``[nodes]`` int64 children (−1 at leaves).
        value: ``[nodes, n_classes]`` float64 class distribution of the node (rows sum to 1).
        n_features: width of the feature vectors.
    """

    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    value: torch.Tensor
    n_features: int

    @property
    def n_classes(self) -> int:
        return int(self.value.shape[1])

    @property
    def depth(self) -> int:
        """Number of split levels (0 for a single leaf)."""
        depth = torch.zeros(len(self.feature), dtype=torch.long)
        for i in range(len(self.feature)):  # nodes are numbered parents first (depth-first order)
            if self.left[i] >= 0:
                depth[self.left[i]] = depth[i] + 1
                depth[self.right[i]] = depth[i] + 1
        return int(depth.max())

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        *,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        max_features: Any = None,
        seed: int = 0,
    ) -> TreeArrays:
        """Fit a scikit-learn decision tree and keep its arrays.

        Args:
            features: ``[N, D]`` training vectors.
            labels: ``[N]`` class ids in ``0..n_classes-1``.
            n_classes: the size of the class space (classes absent from ``labels`` get probability 0).
            max_depth, min_samples_leaf, max_features: the tree's hyper-parameters.
            seed: ``random_state`` (feature order of ties, ``max_features`` draws).

        Returns:
            The tree.

        Example:
            >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
            >>> t = TreeArrays.fit(x, torch.tensor([0, 0, 2, 2]), 3)
            >>> t.predict_proba(torch.tensor([[0.5], [2.5]])).tolist()
            [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
        """
        from sklearn.tree import DecisionTreeClassifier

        if len(features) == 0:
            raise SafeReuseError("no training vector to fit the tree on", fix="give benign inputs")
        clf = DecisionTreeClassifier(
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            max_features=max_features,
            random_state=seed,
        )
        clf.fit(features.detach().cpu().numpy().astype(np.float32, copy=False), labels.cpu().numpy())
        t = clf.tree_
        raw = np.asarray(t.value)[:, 0, :].astype(np.float64)
        raw = raw / np.clip(raw.sum(1, keepdims=True), 1e-300, None)
        value = np.zeros((t.node_count, n_classes), dtype=np.float64)
        value[:, np.asarray(clf.classes_, dtype=np.int64)] = raw
        return cls(
            feature=torch.from_numpy(np.asarray(t.feature, dtype=np.int64).copy()),
            threshold=torch.from_numpy(np.asarray(t.threshold, dtype=np.float64).copy()),
            left=torch.from_numpy(np.asarray(t.children_left, dtype=np.int64).copy()),
            right=torch.from_numpy(np.asarray(t.children_right, dtype=np.int64).copy()),
            value=torch.from_numpy(value),
            n_features=int(features.shape[1]),
        )

    def leaves(self, x: torch.Tensor) -> torch.Tensor:
        """The leaf each row of ``x`` ends in (``[N]`` node ids)."""
        if x.dim() == 2 and x.shape[0] == 0:  # no inputs (e.g. an attack that never succeeded)
            return torch.empty(0, dtype=torch.long)
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise SafeReuseError(
                f"feature vectors are {tuple(x.shape)}, the tree expects [N, {self.n_features}]",
                fix="use the detector with the model it was fitted on",
            )
        node = torch.zeros(len(x), dtype=torch.long)
        rows = torch.arange(len(x))
        xv = x.detach().cpu().to(torch.float32)
        while True:
            inner = self.left[node] >= 0
            if not bool(inner.any()):
                return node
            f = self.feature[node].clamp(min=0)
            go_left = xv[rows, f].double() <= self.threshold[node]
            nxt = torch.where(go_left, self.left[node], self.right[node])
            node = torch.where(inner, nxt, node)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, n_classes]`` class probabilities (the leaf's class distribution)."""
        return self.value[self.leaves(x)]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[N]`` predicted class (ties to the lower class id, as scikit-learn's argmax)."""
        return self.predict_proba(x).argmax(1)

    def tensors(self, prefix: str = "tree.") -> dict[str, torch.Tensor]:
        """The arrays, for safetensors."""
        return {
            f"{prefix}feature": self.feature,
            f"{prefix}threshold": self.threshold,
            f"{prefix}left": self.left,
            f"{prefix}right": self.right,
            f"{prefix}value": self.value,
        }

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], n_features: int, prefix: str = "tree."
    ) -> TreeArrays:
        """Rebuild from :meth:`tensors`, checking that the arrays form a tree.

        Raises:
            SafeReuseError: missing or inconsistent arrays.
        """
        try:
            t = cls(
                feature=tensors[f"{prefix}feature"].long(),
                threshold=tensors[f"{prefix}threshold"].double(),
                left=tensors[f"{prefix}left"].long(),
                right=tensors[f"{prefix}right"].long(),
                value=tensors[f"{prefix}value"].double(),
                n_features=int(n_features),
            )
        except KeyError as exc:
            raise SafeReuseError(
                f"the detector file lacks {exc.args[0]}", fix="re-fit the detector"
            ) from None
        n = len(t.feature)
        ok = (
            n > 0
            and all(len(a) == n for a in (t.threshold, t.left, t.right, t.value))
            and bool(((t.left == -1) == (t.right == -1)).all())
            and bool((t.left < n).all() and (t.right < n).all())
            and bool((t.left[t.left >= 0] > torch.arange(n)[t.left >= 0]).all())
            and bool((t.feature[t.left >= 0] < t.n_features).all())
        )
        if not ok:
            raise SafeReuseError("the detector's tree arrays are corrupt", fix="re-fit the detector")
        return t


__all__ = ["TreeArrays"]
