"""Per-AU heads of the AUNCE encoder: feature blocks, graph layer, linear classifiers
(docs/PROTOCOLS.md#aunce-as-released)."""

from __future__ import annotations

import math

import torch
from torch import nn


class AUFeatureBlocks(nn.Module):
    """K per-AU blocks Linear(in_dim, dim) + BatchNorm + ReLU on every token, mean over tokens, as released.

    All AUs run as one Linear(in_dim, K*dim) and one BatchNorm1d(K*dim) over the B*T tokens, which is
    exactly K separate blocks because BatchNorm statistics are per channel. Maps [B, T, in_dim] -> [B, K, dim].
    """

    def __init__(self, in_dim: int, num_aus: int, dim: int):
        super().__init__()
        self.num_aus, self.dim = num_aus, dim
        self.fc = nn.Linear(in_dim, num_aus * dim)
        self.bn = nn.BatchNorm1d(num_aus * dim)
        # Weight init of the AUNCE release (LinearBlock: normal, std sqrt(2 / out_features) per block).
        nn.init.normal_(self.fc.weight, 0.0, math.sqrt(2.0 / dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, _ = tokens.shape
        h = torch.relu(self.bn(self.fc(tokens.reshape(b * t, -1))))
        return h.view(b, t, self.num_aus, self.dim).mean(dim=1)


class AUGraph(nn.Module):
    """ANFL-style graph layer over the K AU nodes, as released: [B, K, D] -> [B, K, D].

    Per sample, A[i, j] = 1 for the ``top_k`` nodes j with the largest dot product <x_i, x_j> of the
    detached features (node i itself usually among them, as in the release) and 0 otherwise, so A is
    binary like the release's ``si >= threshold``; ties are broken by ``torch.topk`` so every row has
    exactly ``top_k`` ones (the release keeps all tied nodes); top_k >= K gives the full graph.
    Then A_n = D^-1/2 A D^-1/2 with the row degrees D (always top_k, so A_n = A / top_k) and
    x' = ReLU(x + BN(A_n V(x) + U(x))), BN over the K node channels.
    """

    def __init__(self, num_aus: int, dim: int, top_k: int = 4):
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = min(top_k, num_aus)
        self.U = nn.Linear(dim, dim)
        self.V = nn.Linear(dim, dim)
        self.bn = nn.BatchNorm1d(num_aus)
        # Weight init of the AUNCE release (GNN: U, V normal with std sqrt(2 / dim)).
        nn.init.normal_(self.U.weight, 0.0, math.sqrt(2.0 / dim))
        nn.init.normal_(self.V.weight, 0.0, math.sqrt(2.0 / dim))

    def adjacency(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary top-k adjacency [B, K, K] and its normalisation D^-1/2 A D^-1/2, both without gradient."""
        feats = x.detach()
        sim = feats @ feats.transpose(1, 2)
        idx = sim.topk(self.top_k, dim=-1).indices
        adj = torch.zeros_like(sim).scatter_(-1, idx, 1.0)
        inv_sqrt_deg = adj.sum(dim=-1).rsqrt()
        return adj, inv_sqrt_deg.unsqueeze(-1) * adj * inv_sqrt_deg.unsqueeze(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, norm_adj = self.adjacency(x)
        return torch.relu(x + self.bn(norm_adj @ self.V(x) + self.U(x)))


class PerAULinear(nn.Module):
    """K independent linear classifiers, one per AU node: [B, K, D] -> [B, K, out] ([B, K] if out == 1)."""

    def __init__(self, num_aus: int, dim: int, out_features: int = 1):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default init
        self.weight = nn.Parameter(torch.empty(num_aus, dim, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_aus, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bkd,kdo->bko", x, self.weight) + self.bias
        return out.squeeze(-1) if out.shape[-1] == 1 else out
