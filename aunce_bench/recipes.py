"""Method recipes: how a method turns training frames into a predictor.

A recipe composes the training loops; its hyperparameters come from the method YAML. Built in:
`supervised` (encoder + per-AU classifier, e.g. WCE), `coteaching` (two such classifiers teaching each other),
`contrastive_probe` (AUNCE and the contrastive baselines: contrastive pretraining, then a linear probe on frozen
features), `supervised_probe` (supervised encoder, probed the same way: isolates the loss from the evaluation
protocol) and `frozen_probe` (the same probe on the encoder as initialised: the floor any learned
representation must beat).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from aunce_bench.data.loaders import FrameSet, in_order
from aunce_bench.models import AUEncoder, PerAULinear
from aunce_bench.models.init import load_backbone
from aunce_bench.losses import SUPERVISED_LOSSES, bind_loss
from aunce_bench.registry import Registry
from aunce_bench.specs import RunSpec
from aunce_bench.training.common import TrainContext
from aunce_bench.training.coteaching import train_coteaching
from aunce_bench.training.contrastive import pretrain_contrastive
from aunce_bench.training.probe import extract_features, probe_probabilities, recalibrate_batchnorm, train_probe
from aunce_bench.training.supervised import predict_logits, train_supervised


RECIPES: Registry[type["Recipe"]] = Registry("recipe", "aunce_bench.methods")


class Recipe(ABC):
    """Fit on training frames (optionally selecting on validation frames), then predict probabilities.

    `needs` names the method fields (loss, train, probe) the recipe reads; planning checks them, refuses
    `views` on a recipe whose `takes_views` is False, and checks the method's loss against the registry of
    `loss_kind` (a key of `aunce_bench.losses.LOSS_KINDS`; None: any loss)."""

    needs: tuple[str, ...] = ("loss", "train")
    takes_views = False
    loss_kind: str | None = None

    def __init__(self, run: RunSpec, ctx: TrainContext):
        self.run, self.ctx = run, ctx
        self.encoder = self.new_encoder()

    def new_encoder(self) -> AUEncoder:
        """An AU encoder on the run's backbone, as initialised (its AU blocks and graph freshly drawn)."""
        model = self.run.method.model
        backbone, self.init_provenance = load_backbone(model.backbone, self.run.init, self.run.crop_size,
                                                       self.ctx.device, self.ctx.progress)
        return AUEncoder(backbone, len(self.run.aus), model.dim or backbone.num_features, graph=model.graph)

    @abstractmethod
    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        """Train; returns facts worth storing (selected epochs, losses, images seen)."""

    @abstractmethod
    def predict_proba(self, frames: FrameSet) -> np.ndarray:
        """P(AU present) [N, K]."""


class _Classifier(nn.Module):
    def __init__(self, encoder: AUEncoder, head: PerAULinear):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


@RECIPES.register("supervised")
class Supervised(Recipe):
    takes_views = True
    loss_kind = "supervised"

    def __init__(self, run: RunSpec, ctx: TrainContext):
        super().__init__(run, ctx)
        self.model = _Classifier(self.encoder, PerAULinear(len(run.aus), self.encoder.dim, 1))

    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        spec, loss_spec = self.run.method.train, self.run.method.loss
        loss_fn = bind_loss(loss_spec, self.loss_kind)
        if getattr(SUPERVISED_LOSSES.get(loss_spec.name), "per_frame", False):  # state per training frame (ELR)
            loss_fn = loss_fn(len(train), len(self.run.aus))
        info = train_supervised(self.model, train, val, spec, loss_fn, self.run.crop_size,
                                self.run.decision_threshold, self.ctx, self.run.method.views)
        return {**info, "images_seen": len(train) // spec.batch_size * spec.batch_size * spec.epochs}

    def predict_proba(self, frames: FrameSet) -> np.ndarray:
        return torch.sigmoid(predict_logits(self.model, frames, self.run.crop_size, self.ctx)).numpy()


@RECIPES.register("coteaching")
class CoTeaching(Supervised):
    """Two supervised classifiers (same backbone init, AU blocks and heads drawn apart) trained by co-teaching;
    the first is evaluated. Twice the training compute of `supervised`."""

    takes_views = False
    loss_kind = "co-teaching"

    def __init__(self, run: RunSpec, ctx: TrainContext):
        super().__init__(run, ctx)
        self.peer = _Classifier(self.new_encoder(), PerAULinear(len(run.aus), self.encoder.dim, 1))

    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        spec = self.run.method.train
        loss_fn = bind_loss(self.run.method.loss, self.loss_kind)
        info = train_coteaching(self.model, self.peer, train, val, spec, loss_fn, self.run.crop_size,
                                self.run.decision_threshold, self.ctx)
        return {**info, "images_seen": 2 * (len(train) // spec.batch_size) * spec.batch_size * spec.epochs}


class _LinearProbe:
    """Per-AU linear classifiers on the frozen encoder's features (features extracted once per set)."""

    def probe(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        crop, ctx = self.run.crop_size, self.ctx
        ctx.prepare(self.encoder)  # frozen_probe trains nothing before this: its encoder is still as it was built
        train_batches = in_order(train, ctx.device)  # made once: two passes share its decoding workers
        recalibrate_batchnorm(self.encoder, train_batches, crop, ctx)
        features = extract_features(self.encoder, train_batches, crop, ctx)
        val_features = extract_features(self.encoder, val, crop, ctx) if val is not None else None
        self.head, info = train_probe(features, train.labels, val_features, None if val is None else val.labels,
                                      self.run.method.probe, self.run.decision_threshold, self.ctx)
        return info

    def predict_proba(self, frames: FrameSet) -> np.ndarray:
        return probe_probabilities(self.head, extract_features(self.encoder, frames, self.run.crop_size, self.ctx))


@RECIPES.register("contrastive_probe")
class ContrastiveProbe(_LinearProbe, Recipe):
    needs = ("loss", "train", "probe")
    takes_views = True
    loss_kind = "contrastive"

    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        spec = self.run.method.train
        info = pretrain_contrastive(self.encoder, train, spec, bind_loss(self.run.method.loss, self.loss_kind),
                                    self.run.crop_size, self.ctx, self.run.method.views)
        images_seen = 2 * (len(train) // spec.batch_size) * spec.batch_size * spec.epochs
        return {**info, **self.probe(train, val), "images_seen": images_seen}


@RECIPES.register("supervised_probe")
class SupervisedProbe(_LinearProbe, Supervised):
    needs = ("loss", "train", "probe")

    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        info = Supervised.fit(self, train, val)
        return {**info, **self.probe(train, val)}


@RECIPES.register("frozen_probe")
class FrozenProbe(_LinearProbe, Recipe):
    """The linear probe on the encoder as initialised (its per-AU blocks and graph at their random init)."""

    needs = ("probe",)

    def fit(self, train: FrameSet, val: FrameSet | None) -> dict[str, float]:
        return {**self.probe(train, val), "images_seen": 0}
