"""The AUNCE encoder: backbone tokens -> per-AU node features -> AU graph layer
(docs/PROTOCOLS.md#aunce-as-released)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import TokenBackbone, create_backbone
from .heads import AUFeatureBlocks, AUGraph


class AUEncoder(nn.Module):
    """Image [B, 3, H, W] -> AU node features [B, K, dim]; ``embed`` gives their L2-normalised form."""

    def __init__(self, backbone: TokenBackbone, num_aus: int, dim: int, graph: bool = True, top_k: int = 4):
        super().__init__()
        self.num_aus, self.dim = num_aus, dim
        self.backbone = backbone
        self.blocks = AUFeatureBlocks(backbone.num_features, num_aus, dim)
        self.graph = AUGraph(num_aus, dim, top_k) if graph else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = self.blocks(self.backbone(x))
        return self.graph(nodes) if self.graph is not None else nodes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm node features z[b, k] for the contrastive losses."""
        return F.normalize(self(x), dim=-1)


def create_encoder(
    backbone_name: str,
    num_aus: int,
    dim: int | None = None,
    graph: bool = True,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    image_size: int | None = None,
    top_k: int = 4,
) -> AUEncoder:
    """Build an :class:`AUEncoder` on a timm backbone; ``dim`` defaults to the backbone width
    (1024 for swin_base_patch4_window7_224 as released, 512 for resnet18)."""
    backbone = create_backbone(
        backbone_name, pretrained=pretrained, checkpoint_path=checkpoint_path, image_size=image_size
    )
    return AUEncoder(backbone, num_aus, backbone.num_features if dim is None else dim, graph=graph, top_k=top_k)
