"""Text defects: backdoors planted with trigger words and word-level adversarial attacks.

One class per defect (DESIGN.md principle 12), registered in :data:`~safereuse.defects.DEFECTS`:

================  ==================================================================================
``word-trigger``  data poisoning: rare trigger words inserted into a share of the training sentences,
                  relabelled to the target (Kurita et al. 2020's triggers ``cf tq mn bb mb``)
``ripple``        RIPPLe weight poisoning (restricted inner product) with embedding surgery
``pwws``          word importance ranking + WordNet synonym substitution (PWWS / TextFooler family),
                  crafted on the teacher and transferred
``greedy-swap``   greedy word swap: the single best synonym swap over all words, repeated
================  ==================================================================================

Backdoor rows report DIR as the label-flip rate (:func:`label_flip_rate`); attack rows the
adversarial DIR. Inputs are token-id tensors (:mod:`safereuse.data.text`).
"""

from __future__ import annotations

from .ripple import Ripple, embedding_surgery, ripple_loss, target_words
from .triggers import RARE_TOKENS, TextBackdoor, WordTrigger, insert_tokens, label_flip_rate
from .word_attacks import PWWS, GreedySwap, WordAttack

__all__ = [
    "PWWS",
    "RARE_TOKENS",
    "GreedySwap",
    "Ripple",
    "TextBackdoor",
    "WordAttack",
    "WordTrigger",
    "embedding_surgery",
    "insert_tokens",
    "label_flip_rate",
    "ripple_loss",
    "target_words",
]
