"""AU losses: the AUNCE contrastive loss, its contrastive baselines and the supervised losses, registered by kind
(`aunce_bench.losses.kinds`)."""

from aunce_bench.losses import contrastive, noise_robust, supervised  # noqa: F401  (registers the built-in losses)
from aunce_bench.losses.aunce import aunce_loss
from aunce_bench.losses.kinds import (CONTRASTIVE_LOSSES, COTEACHING_LOSSES, LOSS_KINDS, SUPERVISED_LOSSES, bind_loss,
                                      check_loss, loss_options)
from aunce_bench.losses.weighted import class_weights, weighted_bce, weighted_softmax_ce

__all__ = ["CONTRASTIVE_LOSSES", "COTEACHING_LOSSES", "LOSS_KINDS", "SUPERVISED_LOSSES", "aunce_loss", "bind_loss",
           "check_loss", "class_weights", "loss_options", "weighted_bce", "weighted_softmax_ce"]
