"""AU losses: the AUNCE contrastive loss and class-weighted supervised losses."""

from aunce_bench.losses.aunce import aunce_loss
from aunce_bench.losses.weighted import class_weights, weighted_bce, weighted_softmax_ce

__all__ = ["aunce_loss", "class_weights", "weighted_bce", "weighted_softmax_ce"]
