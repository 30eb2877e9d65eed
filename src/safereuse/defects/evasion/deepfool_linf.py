"""``deepfool-linf``: DeepFool's L∞ form (Moosavi-Dezfooli et al., CVPR 2016, §3.3), ours, batched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field

from ...device import model_device
from ..attacks import WhiteBoxAttack, attack_mode
from ..base import DEFECTS


@DEFECTS.register("deepfool-linf", "DeepFool's L∞ form (Moosavi-Dezfooli et al. 2016), batched")
@dataclass
class DeepFoolLinf(WhiteBoxAttack):
    """DeepFool for the L∞ norm: at each step move to the nearest linearised boundary in L∞,
    ``r = (|f'_l| + 1e-4) / ‖w'_l‖₁ · sign(w'_l)``, until the class changes; overshoot ``1 + overshoot``.

    Args:
        max_iter: steps.
        overshoot: overshoot factor (0.02 as in the paper).
        nb_grads: classes considered (the highest logits; None: all).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
        >>> DeepFoolLinf(max_iter=3).craft(net, x, torch.zeros(3, dtype=torch.long)).shape
        torch.Size([3, 1, 2, 2])
    """

    max_iter: Annotated[int, Field(ge=1)] = 50
    overshoot: float = 0.02
    nb_grads: int | None = 10

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        dev = model_device(model)
        x0 = x.detach().to(dev)
        with attack_mode(model):
            with torch.no_grad():
                logits0 = model(x0)
            k = logits0.shape[1] if self.nb_grads is None else min(self.nb_grads, logits0.shape[1])
            cand = logits0.topk(k, 1).indices  # [N, k]; column 0 = the original class
            orig = cand[:, 0]
            r_tot = torch.zeros_like(x0)
            active = torch.ones(len(x0), dtype=torch.bool, device=dev)
            for _ in range(self.max_iter):
                xa = (x0 + (1 + self.overshoot) * r_tot).clamp(0, 1).requires_grad_(True)
                with torch.enable_grad():
                    out = model(xa)
                    picked = [out.gather(1, cand[:, j : j + 1]).sum() for j in range(k)]
                    grads = [
                        torch.autograd.grad(o, xa, retain_graph=j < k - 1)[0] for j, o in enumerate(picked)
                    ]
                active &= out.argmax(1) == orig
                if not bool(active.any()):
                    break
                g = torch.stack(grads, 1)  # [N, k, ...]
                f = out.gather(1, cand).detach()
                w = g[:, 1:] - g[:, :1]
                fd = (f[:, 1:] - f[:, :1]).abs()
                dist = (fd + 1e-4) / w.flatten(2).abs().sum(2).clamp_min(1e-12)
                best = dist.argmin(1)
                wb = w[torch.arange(len(x0), device=dev), best]
                step = dist.gather(1, best[:, None]).view(-1, *([1] * (x0.dim() - 1))) * wb.sign()
                r_tot = r_tot + step * active.view(-1, *([1] * (x0.dim() - 1)))
        return (x0 + (1 + self.overshoot) * r_tot).clamp(0, 1).detach().to(x.device)


__all__ = ["DeepFoolLinf"]
