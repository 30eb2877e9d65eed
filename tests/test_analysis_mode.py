"""The one "analysis mode" helper and its state-keeping primitive (issue 21 item 5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safereuse.device import model_device
from safereuse.train import predict, predict_labels
from safereuse.utils import analysis_mode, preserve_modes, weights_hash


def mixed_model() -> nn.Sequential:
    """A training model with a frozen BatchNorm kept in eval and one frozen parameter."""
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    m.train()
    m[1].eval()
    m[3].bias.requires_grad_(False)
    return m


def state(m: nn.Module) -> tuple[list[bool], list[bool]]:
    return [x.training for x in m.modules()], [p.requires_grad for p in m.parameters()]


def test_analysis_mode_sets_eval_no_grad_frozen_and_restores_a_mixed_state():
    m = mixed_model()
    before = state(m)
    with analysis_mode(m) as got:
        assert got is m
        assert not any(x.training for x in m.modules())
        assert not any(p.requires_grad for p in m.parameters())
        assert not torch.is_grad_enabled()
        assert not m(torch.randn(5, 3)).requires_grad
    assert state(m) == before
    assert torch.is_grad_enabled()


def test_analysis_mode_restores_on_exception():
    m = mixed_model()
    before = state(m)
    with pytest.raises(RuntimeError, match="boom"), analysis_mode(m):
        m[0].train()  # the block may change modes itself: they come back too
        raise RuntimeError("boom")
    assert state(m) == before
    assert torch.is_grad_enabled()


def test_analysis_mode_with_grad_gives_input_gradients_only():
    m = mixed_model()
    x = torch.randn(5, 3, requires_grad=True)
    with analysis_mode(m, grad=True):
        m(x).sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in m.parameters())
    assert state(m) == state(mixed_model())


def test_analysis_mode_inside_no_grad_keeps_grad_off():
    m = mixed_model()
    with torch.no_grad(), analysis_mode(m, grad=True):
        assert not torch.is_grad_enabled()


def test_analysis_mode_extra_modules():
    body, head = mixed_model(), nn.Linear(2, 2)
    with analysis_mode(body, extra=[head]):
        assert not head.training and not head.weight.requires_grad
    assert head.training and head.weight.requires_grad


def test_preserve_modes_keeps_what_the_block_changes_local():
    m = mixed_model()
    before = state(m)
    with preserve_modes(m):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(True)
    assert state(m) == before


def test_predict_labels_device_and_weights_hash():
    torch.manual_seed(0)
    m = mixed_model()
    before = state(m)
    x = torch.randn(7, 3)
    assert predict_labels(m, x, 3).tolist() == predict(m, x, 3).argmax(1).tolist()
    assert predict_labels(m, x[:0], 3).dtype == torch.long and len(predict_labels(m, x[:0], 3)) == 0
    assert state(m) == before
    assert model_device(m) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")
    h = weights_hash(m)
    with torch.no_grad():
        m[0].weight.add_(1)
    assert weights_hash(m) != h
