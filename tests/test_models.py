"""aunce_bench.models: token backbones, per-AU heads and the AUNCE encoder
(docs/PROTOCOLS.md#aunce-as-released)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aunce_bench.models import (
    AUEncoder,
    AUFeatureBlocks,
    AUGraph,
    PerAULinear,
    TokenBackbone,
    create_backbone,
    create_encoder,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet18_encoder_shapes_at_64px():
    enc = create_encoder("resnet18", num_aus=12)
    assert enc.dim == enc.backbone.num_features == 512
    x = torch.randn(2, 3, 64, 64)
    assert enc.backbone(x).shape == (2, 4, 512)  # 2x2 map of stride-32 features
    assert enc(x).shape == (2, 12, 512)
    assert create_encoder("resnet18", num_aus=3, dim=16, graph=False)(x).shape == (2, 3, 16)


def test_swin_tokens_at_non_224_size():
    backbone = create_backbone("swin_tiny_patch4_window7_224", image_size=64)
    assert backbone.channels_last and backbone.num_features == 768
    x = torch.randn(2, 3, 64, 64)
    assert backbone(x).shape == (2, 4, 768)  # 64 / 32 = 2x2 tokens, NHWC flattened
    enc = AUEncoder(backbone, num_aus=5, dim=32)
    assert enc(x).shape == (2, 5, 32)


def test_vit_tokens_pass_through():
    backbone = create_backbone("test_vit", image_size=32)
    assert backbone(torch.randn(2, 3, 32, 32)).shape[::2] == (2, backbone.num_features)


def test_unknown_backbone_suggests_names():
    with pytest.raises(ValueError, match="did you mean.*resnet18"):
        create_backbone("resnet_18")


def test_checkpoint_path_loads_weights(tmp_path):
    source = create_backbone("resnet18").model
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)  # ImageNet head: dropped
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    loaded = create_backbone("resnet18", checkpoint_path=str(path)).model.state_dict()
    assert loaded.keys() == state.keys() - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_checkpoint_with_foreign_keys_is_rejected(tmp_path):
    state = {f"encoder.{k}": v for k, v in create_backbone("resnet18").model.state_dict().items()}
    path = tmp_path / "wrapped.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="Missing keys"):
        create_backbone("resnet18", checkpoint_path=str(path))
    with pytest.raises(FileNotFoundError):
        create_backbone("resnet18", checkpoint_path=str(tmp_path / "absent.pth"))


def test_feature_blocks_equal_separate_blocks():
    in_dim, k, d = 6, 3, 4
    fused = AUFeatureBlocks(in_dim, k, d)
    separate = [nn.Sequential(nn.Linear(in_dim, d), nn.BatchNorm1d(d), nn.ReLU()) for _ in range(k)]
    for i, block in enumerate(separate):
        rows = slice(i * d, (i + 1) * d)
        block[0].weight.data.copy_(fused.fc.weight[rows])
        block[0].bias.data.copy_(fused.fc.bias[rows])
        block[1].weight.data.copy_(torch.rand(d) + 0.5)
        block[1].bias.data.copy_(torch.randn(d))
        block[1].running_mean.copy_(torch.randn(d))
        block[1].running_var.copy_(torch.rand(d) + 0.5)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(fused.bn, name).data[rows] = getattr(block[1], name)
    fused.eval()
    for block in separate:
        block.eval()
    tokens = torch.randn(2, 5, in_dim)
    expected = torch.stack([block(tokens.reshape(10, in_dim)).view(2, 5, d).mean(1) for block in separate], 1)
    torch.testing.assert_close(fused(tokens), expected)
    # Train mode: per-channel batch statistics make the fused BN equal separate BNs too.
    fused.train()
    for block in separate:
        block.train()
    expected = torch.stack([block(tokens.reshape(10, in_dim)).view(2, 5, d).mean(1) for block in separate], 1)
    torch.testing.assert_close(fused(tokens), expected)


def test_graph_adjacency_is_top_k_and_normalised():
    graph = AUGraph(num_aus=6, dim=8, top_k=3)
    x = torch.randn(4, 6, 8, requires_grad=True)
    adj, norm = graph.adjacency(x)
    assert not adj.requires_grad and not norm.requires_grad
    assert set(adj.unique().tolist()) == {0.0, 1.0}
    assert (adj.sum(-1) == 3).all()
    sim = x.detach() @ x.detach().transpose(1, 2)
    kth = sim.sort(dim=-1, descending=True).values[..., 2:3]
    assert torch.equal(adj.bool(), sim >= kth)  # the top-3 similarities of each row
    deg = adj.sum(-1)
    expected = torch.diag_embed(deg**-0.5) @ adj @ torch.diag_embed(deg**-0.5)
    torch.testing.assert_close(norm, expected)


def test_graph_gradient_bypasses_similarity():
    graph = AUGraph(num_aus=5, dim=8, top_k=2).eval()
    x = torch.randn(3, 5, 8, requires_grad=True)
    weights = torch.randn(3, 5, 8)
    (graph(x) * weights).sum().backward()
    grad = x.grad.clone()

    _, fixed = graph.adjacency(x)  # a constant: only the V and U paths depend on x below
    x.grad = None
    ref = torch.relu(x + graph.bn(fixed @ graph.V(x) + graph.U(x)))
    (ref * weights).sum().backward()
    torch.testing.assert_close(grad, x.grad)
    assert grad.abs().sum() > 0


def test_graph_top_k_bounds():
    with pytest.raises(ValueError):
        AUGraph(num_aus=3, dim=4, top_k=0)
    adj, _ = AUGraph(num_aus=2, dim=4, top_k=4).adjacency(torch.randn(1, 2, 4))
    assert (adj == 1).all()  # fewer AUs than top_k: fully connected


def test_per_au_linear_equals_separate_linears():
    k, d = 4, 6
    x = torch.randn(3, k, d)
    for out in (1, 2):
        head = PerAULinear(k, d, out)
        linears = [nn.Linear(d, out) for _ in range(k)]
        for i, lin in enumerate(linears):
            lin.weight.data.copy_(head.weight[i].T)
            lin.bias.data.copy_(head.bias[i])
        expected = torch.stack([lin(x[:, i]) for i, lin in enumerate(linears)], 1)
        got = head(x)
        assert got.shape == ((3, k) if out == 1 else (3, k, out))
        torch.testing.assert_close(got, expected.squeeze(-1) if out == 1 else expected)


def test_embed_has_unit_norm_rows():
    enc = create_encoder("resnet18", num_aus=3, dim=16).eval()
    z = enc.embed(torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 3, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2, 3))


def test_tiny_encoder_overfits_random_images():
    enc = create_encoder("test_resnet", num_aus=2, dim=16)  # timm's tiny ResNet (96 channels)
    head = PerAULinear(2, 16)
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 2, (16, 2)).float()
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(50):
        loss = F.binary_cross_entropy_with_logits(head(enc(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_token_backbone_rejects_misread_layout():
    class Odd(nn.Module):
        num_features = 7

        def forward_features(self, x):
            return torch.zeros(x.shape[0], 3, 2, 2)

    with pytest.raises(RuntimeError, match="num_features"):
        TokenBackbone(Odd())(torch.zeros(1, 3, 8, 8))
