"""Encoders for AU detection: timm token backbones and the AUNCE per-AU heads
(docs/PROTOCOLS.md#aunce-as-released)."""

from .backbones import TokenBackbone, create_backbone
from .encoder import AUEncoder, create_encoder
from .heads import AUFeatureBlocks, AUGraph, PerAULinear

__all__ = [
    "AUEncoder",
    "AUFeatureBlocks",
    "AUGraph",
    "PerAULinear",
    "TokenBackbone",
    "create_backbone",
    "create_encoder",
]
