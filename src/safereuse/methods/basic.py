"""The standard transfer baselines: fine-tune, fine-tune the last k blocks, linear probe, retrain.

Reference: Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014;
the ReMoS paper (ICSE 2022) uses fine-tune and retrain as its two reference points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from ..data import DataBundle
from ..models import ReusableModel, create_model, untrained_kwargs
from ..slicing import reinit_body
from ..train import FitConfig
from ..utils import config_hash, seed_everything
from .base import METHODS, Prepared, TransferMethod


@METHODS.register("finetune", "fine-tune every layer from the teacher (new head)")
@dataclass
class Finetune(TransferMethod):
    """Fine-tune all parameters of the teacher with a new head.

    Example:
        >>> Finetune(epochs=5, lr=0.01).config()["method"]
        'finetune'
    """


@METHODS.register("finetune-last-k", "fine-tune only the last k blocks (BatchNorm policy selectable)")
@dataclass
class FinetuneLastK(TransferMethod):
    """Fine-tune the last ``k`` blocks (``model.blocks()``, head included), freeze the rest.

    Args:
        k: number of trailing blocks to train (1 = head only).
        bn_stats: ``update`` or ``freeze`` (reuse) the running statistics of frozen BatchNorm layers.
        bn_affine: ``train`` or ``freeze`` BatchNorm affine parameters inside the trained blocks.

    Example:
        >>> FinetuneLastK(k=2, bn_stats="freeze").config()["k"]
        2
    """

    k: Annotated[int, Field(ge=1)] = 2
    bn_stats: Literal["update", "freeze"] = "freeze"
    bn_affine: Literal["train", "freeze"] = "train"

    def fit_config(self, seed: int, device: str, progress: bool, **overrides) -> FitConfig:
        return super().fit_config(seed, device, progress, train_last_k=self.k, **overrides)


@METHODS.register("linear-probe", "train only a new head on the frozen teacher features")
@dataclass
class LinearProbe(TransferMethod):
    """Train a new head on the frozen feature extractor (BatchNorm statistics frozen too).

    Example:
        >>> LinearProbe().config()["head_lr_mult"]
        1.0
    """

    lr: Annotated[float, Field(gt=0)] = 0.05
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0

    def fit_config(self, seed: int, device: str, progress: bool, **overrides) -> FitConfig:
        return super().fit_config(seed, device, progress, train_last_k=1, bn_stats="freeze", **overrides)


@METHODS.register("retrain", "train the teacher's architecture from scratch on the student data")
@dataclass
class Retrain(TransferMethod):
    """Same architecture, weights re-initialised, trained on the student's data only.

    The lower bound of inheritance (nothing is reused) and usually of accuracy on few-shot data.
    Normalisation statistics come from the student's training split.

    Example:
        >>> Retrain(epochs=30).config()["epochs"]
        30
    """

    lr: Annotated[float, Field(gt=0)] = 0.05
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        if model.info is None:
            # A foreign model (``adapt``): re-initialise it in place through reset_parameters.
            model.reset_head(data.num_classes, seed=seed)
            reinit_body(model, seed)
            model.set_normalization(data.mean, data.std)
            return Prepared(model)
        # A seed of its own: re-using the run's seed would reproduce the teacher's own initialisation.
        seed_everything(int(config_hash({"retrain": seed}, 8), 16))
        kwargs = dict(untrained_kwargs(model.info), num_classes=data.num_classes)
        fresh = create_model(model.info.arch, **kwargs)
        fresh.set_normalization(data.mean, data.std)
        return Prepared(fresh)
