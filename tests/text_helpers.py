"""Token-id batches for the text-model tests."""

from __future__ import annotations

import torch


def ids(rows: list[list[int]], length: int) -> torch.Tensor:
    """[CLS]=1 … [SEP]=2 then padding 0 to ``length``, one row per token list."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        seq = [1, *r, 2]
        out[i, : len(seq)] = torch.tensor(seq)
    return out
