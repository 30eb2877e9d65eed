"""What transfer methods and defects share: activation capture, coverage, weight masks, relevance.

- :func:`capture` (from :mod:`safereuse.models.capture`, below this package so the model contract
  can use it): the one way to read (or change) what layers compute — hooks in a context manager,
  removed in ``finally``;
- :mod:`~safereuse.slicing.coverage`: NC / TKNC / SNAC coverage (:func:`channel_coverage`) and the
  per-layer :func:`coverage_profile` of a data set (ReMoS; the nc-guided generator uses the same
  definition);
- :mod:`~safereuse.slicing.masks`: mask sets (parameter name → bool, True = kept), exact top-k
  selection, magnitude pruning, reset / enforce / re-initialisation helpers;
- :mod:`~safereuse.slicing.relevance`: ReMoS's relevant slice from coverage and magnitudes;
- :mod:`~safereuse.slicing.materialize`: remove the channels a mask set switches off (Torch-Pruning),
  for a really smaller model (SeaM's structural speed-up);
- :mod:`~safereuse.slicing.nnslicer`: NNSlicer's dynamic slice (:class:`Slicer`, :class:`SliceResult`):
  signed contributions of neurons and synapses to a criterion, along the traced dataflow
  (:mod:`~safereuse.slicing.dataflow`);
- :mod:`~safereuse.slicing.maskparam`: SeaM's mask search on any model (:func:`mask_scores`: score
  masks behind ``torch.nn.utils.parametrize``; :func:`search_masks`; :func:`select_epoch`).

Rebuilding a pruned model and a freshly initialised copy (:func:`prune_channels`, :func:`fresh_state`)
live in :mod:`safereuse.models.rebuild`, with the artifact loader that needs them; they are
re-exported here.
"""

from __future__ import annotations

from ..models.capture import Capture, Record, capture, resolve_layers
from ..models.rebuild import PRUNED_ATTR, fresh_state, prune_channels
from .coverage import (
    CRITERIA,
    CoverageProfile,
    Criterion,
    channel_coverage,
    coverage_layers,
    coverage_profile,
    make_criterion,
    nc,
    scaled_channel_means,
    snac,
    tknc,
)
from .maskparam import MaskScores, mask_scores, search_masks, select_epoch
from .masks import (
    KeepMask,
    LayerKind,
    Masks,
    apply_reset,
    magnitude_key,
    magnitude_keys,
    magnitude_slice,
    one_cpu_thread,
    reinit_body,
    slice_info,
    slice_layers,
    smallest_k_mask,
    split_like,
    weight_masks,
)
from .materialize import effective_masks, materialize
from .nnslicer import Slicer, SliceResult
from .relevance import relevant_slice

__all__ = [
    "CRITERIA",
    "PRUNED_ATTR",
    "Capture",
    "CoverageProfile",
    "Criterion",
    "KeepMask",
    "LayerKind",
    "MaskScores",
    "Masks",
    "Record",
    "SliceResult",
    "Slicer",
    "apply_reset",
    "capture",
    "channel_coverage",
    "coverage_layers",
    "coverage_profile",
    "effective_masks",
    "fresh_state",
    "magnitude_key",
    "magnitude_keys",
    "magnitude_slice",
    "make_criterion",
    "mask_scores",
    "materialize",
    "nc",
    "one_cpu_thread",
    "prune_channels",
    "reinit_body",
    "relevant_slice",
    "resolve_layers",
    "scaled_channel_means",
    "search_masks",
    "select_epoch",
    "slice_info",
    "slice_layers",
    "smallest_k_mask",
    "snac",
    "split_like",
    "tknc",
    "weight_masks",
]
