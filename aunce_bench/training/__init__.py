"""Training loops, one per stage kind: supervised, contrastive pretraining, linear probe on cached features."""
