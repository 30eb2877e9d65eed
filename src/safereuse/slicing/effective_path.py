"""EffectivePath's critical paths (Qiu et al., CVPR 2019), on the NNSlicer engine.

Qiu, Liu, Chen, Sun, Yan, Wang. "Adversarial Defense Through Network Profiling Based Path
Extraction", CVPR 2019. For one input, the *effective (critical) path* starts at the predicted
output neuron; for every neuron on the path, the synapses with the largest contributions ``w_i x_i``
whose sum first reaches a share ``θ_EP`` of the neuron's value join the path, and so do the neurons
they come from. The binary vector "synapse on the path or not" is the path.

This is the NNSlicer walk (:class:`~safereuse.slicing.Slicer`) with the profile replaced by zero
(``reference="zero"``: Δ = the raw value, as EffectivePath uses raw activations) and the engine's
prefix rule: it drops the weakest inputs whose cumulative ``|w_i x_i|`` stays below ``θ · |y|``, so
it keeps the strongest ones that make up the remaining ``1 − θ`` share — ``θ = 1 − θ_EP``. The
paper's ``θ_EP = 0.5`` gives ``θ = 0.5``. Unlike the paper (per-weight, per-position paths of a
conv) the granularity is NNSlicer's: channels and kernel slices.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SafeReuseError
from .nnslicer import Slicer


def path_theta(share: float) -> float:
    """The engine's θ for EffectivePath's share ``θ_EP`` of a neuron's value (``1 − θ_EP``).

    Example:
        >>> path_theta(0.5), path_theta(0.9)
        (0.5, 0.09999999999999998)
    """
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise SafeReuseError(f"the path share {share} is outside (0, 1]", fix="pass e.g. 0.5 (the paper's)")
    return 1.0 - share


def effective_paths(
    model: nn.Module,
    x: torch.Tensor,
    *,
    share: float = 0.5,
    criterion: Any = "predicted",
    per_input: bool = True,
    batch_size: int = 256,
) -> Any:
    """The critical paths of ``x`` (a :class:`~safereuse.slicing.SliceResult` of the zero-reference
    walk): a synapse is on input ``n``'s path where ``result.synapse[layer][n] != 0``.

    Args:
        model: the network.
        x: inputs ``[N, ...]``.
        share: EffectivePath's ``θ_EP``, the share of a neuron's value its critical inputs reach.
        criterion: the output neurons the paths start from (default: each input's predicted class).
        per_input: one path per input (``[N, C_out, C_in]``) or the summed path counts.
        batch_size: slicing batch.

    Returns:
        The slice result.
    """
    s = Slicer(theta=path_theta(share), reference="zero")
    return s.slice(model, x, criterion=criterion, per_input=per_input, batch_size=batch_size)


def path_vectors(result: Any) -> torch.Tensor:
    """The binary path vector of every input of a per-input result: ``[N, D]`` uint8, 1 = on the path."""
    return (result.vector() != 0).to(torch.uint8)


__all__ = ["effective_paths", "path_theta", "path_vectors"]
