"""AUNCE loss (docs/PROTOCOLS.md#aunce-as-released) against a direct exp-space reference, its numerics,
and the weighted losses."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss

from aunce_bench.losses import aunce_loss, class_weights, weighted_bce, weighted_softmax_ce

B, K, D = 6, 3, 8


def views(seed: int, b: int = B, k: int = K, d: int = D, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(b, k, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    z2 = F.normalize(torch.randn(b, k, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    return z1, z2


LABELS = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])  # AU 3: one class


def reference(z1, z2, labels, modes, variant, tau=0.5, e_pos=1.2, e_neg=0.8):
    """Literal exp-space float64 computation of the released AUNCE loss with loops; -1 labels are skipped."""
    z = torch.cat([z1, z2]).double()
    y = torch.cat([labels, labels]).tolist()
    n, b = z.shape[0], z.shape[0] // 2
    per_au = []
    for k in range(z.shape[1]):
        losses = []
        for a in range(n):
            if y[a][k] == -1:
                continue
            sim = [math.exp(float(z[a, k] @ z[l, k]) / tau) for l in range(n)]
            positives = [l for l in range(n) if y[l][k] == y[a][k] and (variant == "official" or l != a)]
            negatives = [l for l in range(n) if y[l][k] not in (y[a][k], -1)]
            if not negatives:
                losses.append(0.0)
                continue
            if modes[k] == 0:
                pos = max(sim[l] for l in positives)
            elif modes[k] == 1:
                pos = sum(sim[l] for l in positives) / (n if variant == "official" else len(positives))
            else:
                pos = sim[(a + b) % n]
            e = e_pos if y[a][k] == 1 else e_neg
            neg = sum(sim[l] ** e for l in negatives)
            losses.append(-math.log(pos / (pos + neg)))
        per_au.append(sum(losses) / len(losses) if losses else 0.0)
    return sum(per_au) / len(per_au)


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_matches_exp_space_reference(mode, variant):
    z1, z2 = views(0)
    modes = torch.tensor([mode, (mode + 1) % 3, (mode + 2) % 3])  # every mode meets every AU
    got = aunce_loss(z1, z2, LABELS, positive_modes=modes, variant=variant)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(reference(z1, z2, LABELS, modes.tolist(), variant), abs=1e-5)


def test_variants_and_modes_differ():
    z1, z2 = views(1)
    values = {
        aunce_loss(z1, z2, LABELS, positive_modes=torch.full((K,), m), variant=v).item()
        for m, v in itertools.product(range(3), ["official", "paper"])
    }
    assert len(values) == 5  # aug does not depend on the variant


def test_official_max_positive_is_one_over_tau():
    z1, z2 = views(2)
    y = LABELS[:, :1]
    got = aunce_loss(z1[:, :1], z2[:, :1], y, positive_modes=torch.tensor([0]), temperature=0.25)
    assert got.item() == pytest.approx(reference(z1[:, :1], z2[:, :1], y, [0], "official", tau=0.25), abs=1e-5)
    # quirk of the released loss: a is its own positive, so log pos = z.z / tau = 1 / tau for every anchor.
    z = torch.cat([z1, z2])[:, 0]
    s = z @ z.T / 0.25
    yy = torch.cat([y, y])[:, 0]
    e = torch.where(yy == 1, 1.2, 0.8).unsqueeze(1)
    log_neg = torch.logsumexp(torch.where(yy[:, None] != yy[None, :], e * s, -torch.inf), 1)
    assert got.item() == pytest.approx(F.softplus(log_neg - 4.0).mean().item(), abs=1e-5)


LOW_TAU = 0.05


def aligned_views(seed: int):
    """Views whose same-class rows nearly coincide, so S reaches ~1/tau = 20 (exp(1.2 * 20) >> fp16 max)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(2, K, D, generator=g), dim=-1)
    y = torch.randint(0, 2, (B, K), generator=g)
    y[0], y[1] = 0, 1
    base = centres[y, torch.arange(K)]
    z1 = F.normalize(base + 0.05 * torch.randn(B, K, D, generator=g), dim=-1)
    z2 = F.normalize(base + 0.05 * torch.randn(B, K, D, generator=g), dim=-1)
    return z1, z2, y


def naive_fp16(z1, z2, y, tau):
    """exp, power, ratio in float16 (as released: it overflows once e*S > 11), official mean mode."""
    z = torch.cat([z1, z2]).half().transpose(0, 1)
    yy = torch.cat([y, y]).T
    sim = torch.exp(z @ z.transpose(1, 2) / tau)
    same = yy[:, :, None] == yy[:, None, :]
    e = torch.where(yy == 1, 1.2, 0.8).half()[:, :, None]
    pos = (sim * same).sum(-1) / z.shape[1]
    neg = (sim.pow(e) * ~same).sum(-1)
    return -torch.log(pos / (pos + neg)).mean()


def test_naive_fp16_overflows_where_aunce_loss_does_not():
    z1, z2, y = aligned_views(3)
    assert not torch.isfinite(naive_fp16(z1, z2, y, LOW_TAU))
    modes = torch.ones(K, dtype=torch.long)
    got = aunce_loss(z1.half(), z2.half(), y, temperature=LOW_TAU, positive_modes=modes)
    assert torch.isfinite(got)
    expected = reference(z1.half(), z2.half(), y, [1] * K, "official", tau=LOW_TAU)
    assert got.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("precision", ["bf16_autocast", "fp16_inputs"])
def test_low_precision_low_temperature_is_finite(precision, mode):
    z1, z2, y = aligned_views(4)
    if precision == "fp16_inputs":
        z1, z2 = z1.half(), z2.half()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    modes = torch.full((K,), mode)
    if precision == "bf16_autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = aunce_loss(z1 @ torch.eye(D), z2 @ torch.eye(D), y, temperature=LOW_TAU, positive_modes=modes)
    else:
        loss = aunce_loss(z1, z2, y, temperature=LOW_TAU, positive_modes=modes)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for z in (z1, z2):
        assert z.grad.dtype == z.dtype and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_au_without_negatives_contributes_zero(variant):
    z1, z2 = views(5, k=2)
    z1.requires_grad_(True)
    y = torch.tensor([[1, 0], [1, 1], [1, 0], [1, 1], [1, 0], [1, 0]])  # AU 0: all positive
    modes = torch.tensor([1, 1])
    loss = aunce_loss(z1, z2, y, positive_modes=modes, variant=variant)
    only_second = aunce_loss(z1[:, 1:], z2[:, 1:], y[:, 1:], positive_modes=modes[1:], variant=variant)
    assert only_second > 0
    assert loss.item() == pytest.approx(only_second.item() / 2, rel=1e-6)
    loss.backward()
    assert torch.equal(z1.grad[:, 0], torch.zeros(6, D)) and z1.grad[:, 1].abs().sum() > 0
    assert aunce_loss(z1, z2, torch.zeros(6, 2, dtype=torch.long)).item() == 0.0


def test_seeded_generator_is_deterministic_and_modes_override():
    z1, z2 = views(6, k=12)
    y = torch.randint(0, 2, (B, 12), generator=torch.Generator().manual_seed(0))

    def seeded(seed):
        return aunce_loss(z1, z2, y, generator=torch.Generator().manual_seed(seed))

    assert seeded(11).item() == seeded(11).item()
    assert seeded(11).item() != seeded(12).item()
    drawn = torch.multinomial(
        torch.tensor((0.2, 0.6, 0.2)), 12, replacement=True, generator=torch.Generator().manual_seed(11)
    )
    assert seeded(11).item() == aunce_loss(z1, z2, y, positive_modes=drawn).item()
    forced = torch.full((12,), 2)
    gen = torch.Generator().manual_seed(11)
    assert aunce_loss(z1, z2, y, positive_modes=forced, generator=gen).item() == pytest.approx(
        aunce_loss(z1, z2, y, positive_modes=forced).item(), abs=0
    )
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(11).get_state())  # no draw made


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_missing_label_is_ignored(mode, variant):
    z1, z2 = views(7, b=7, k=1)
    y = torch.tensor([[1], [0], [-1], [1], [0], [0], [1]])
    keep = (y[:, 0] >= 0).nonzero().flatten()
    got = aunce_loss(z1, z2, y, positive_modes=torch.tensor([mode]), variant=variant)
    assert got.item() == pytest.approx(reference(z1, z2, y, [mode], variant), abs=1e-5)
    if not (mode == 1 and variant == "official"):  # the released mean divides by the full 2B
        removed = aunce_loss(z1[keep], z2[keep], y[keep], positive_modes=torch.tensor([mode]), variant=variant)
        assert got.item() == pytest.approx(removed.item(), abs=1e-6)


def test_all_missing_au_contributes_zero():
    z1, z2 = views(8)
    y = LABELS.clone()
    y[:, 2] = -1
    modes = torch.tensor([1, 2, 0])
    got = aunce_loss(z1, z2, y, positive_modes=modes)
    first_two = aunce_loss(z1[:, :2], z2[:, :2], y[:, :2], positive_modes=modes[:2])
    assert got.item() == pytest.approx(first_two.item() * 2 / 3, rel=1e-6)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_gradcheck_mean_mode(variant):
    z1, z2 = views(9, b=3, k=2, d=4, dtype=torch.float64)
    y = torch.tensor([[1, 0], [0, 0], [1, 1]])
    fn = lambda a, b: aunce_loss(a, b, y, positive_modes=torch.tensor([1, 1]), variant=variant)  # noqa: E731
    assert fn(z1, z2).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (z1.requires_grad_(), z2.requires_grad_()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "simclr"}, "variant"),
        ({"temperature": 0.0}, "temperature"),
        ({"positive_modes": torch.tensor([0, 1])}, "positive_modes"),
        ({"positive_modes": torch.tensor([0, 1, 3])}, "positive_modes"),
        ({"positive_probs": (0.5, 0.5)}, "positive_probs"),
    ],
)
def test_aunce_rejects_bad_arguments(kwargs, match):
    z1, z2 = views(10)
    with pytest.raises(ValueError, match=match):
        aunce_loss(z1, z2, LABELS, **kwargs)


def test_aunce_rejects_bad_shapes_and_labels():
    z1, z2 = views(10)
    with pytest.raises(ValueError, match="z1 and z2"):
        aunce_loss(z1, z2[:, :2], LABELS)
    with pytest.raises(ValueError, match="shape"):
        aunce_loss(z1, z2, LABELS[:, :2])
    with pytest.raises(ValueError, match="0, 1 or -1"):
        aunce_loss(z1, z2, LABELS * 9)


def test_class_weights_by_hand():
    labels = np.array([[1, 0, 0], [0, 0, -1], [1, 0, 1], [0, 0, -1]])
    # rates: 2/4, 0 -> clamped to 1/4, 1/2 (over the 2 labelled entries); inverses 2, 4, 2
    expected = np.array([2, 4, 2]) / 8 * 3
    np.testing.assert_allclose(class_weights(labels).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(class_weights(torch.from_numpy(labels)).numpy(), expected, rtol=1e-6)
    assert class_weights(labels).dtype == torch.float32
    with pytest.raises(ValueError, match="no labelled"):
        class_weights(np.array([[1, -1], [0, -1]]))


def test_weighted_bce_matches_manual_and_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 4, generator=g) * 3
    labels = torch.randint(0, 2, (20, 4), generator=g)
    labels[::3, 1] = -1
    weights = torch.tensor([0.5, 1.0, 2.0, 0.5])
    got = weighted_bce(logits, labels, weights)

    p = torch.sigmoid(logits.double())
    keep = labels >= 0
    y = labels.double()
    manual = -(weights.double() * (y * p.log() + (1 - y) * (1 - p).log()))[keep].mean()
    assert got.item() == pytest.approx(manual.item(), rel=1e-6)

    w = weights.double().expand_as(p)[keep].numpy()
    summed = log_loss(y[keep].numpy(), p[keep].numpy(), sample_weight=w, normalize=False, labels=[0, 1])
    assert got.item() == pytest.approx(summed / keep.sum().item(), rel=1e-6)

    assert weighted_bce(logits, torch.full_like(labels, -1), weights).item() == 0.0


def test_weighted_bce_is_stable_and_float32_under_autocast():
    logits = torch.tensor([[200.0, -200.0]], requires_grad=True)
    labels = torch.tensor([[0, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = weighted_bce(logits, labels, torch.ones(2))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(200.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_weighted_softmax_ce_clamps_confident_mistakes():
    weights = torch.tensor([2.0, 0.5])
    logits = torch.tensor([[[50.0, -50.0], [-50.0, 50.0]]], requires_grad=True)  # confidently wrong
    labels = torch.tensor([[1, 0]])
    loss = weighted_softmax_ce(logits, labels, weights)
    per_entry = -torch.log(torch.tensor(1e-3))
    assert loss.item() == pytest.approx((weights * per_entry).mean().item(), rel=1e-7)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # clamped: no gradient


def test_weighted_softmax_ce_matches_manual_with_missing():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 3, 2, generator=g)
    labels = torch.randint(0, 2, (10, 3), generator=g)
    labels[0] = -1
    weights = torch.tensor([1.0, 2.0, 0.25])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = weighted_softmax_ce(logits, labels, weights)
    assert got.dtype == torch.float32
    p = torch.softmax(logits.double(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    manual = (-weights.double() * p.clamp(min=1e-3).log())[labels >= 0].mean()
    assert got.item() == pytest.approx(manual.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B, K, 2\]"):
        weighted_softmax_ce(logits[..., :1], labels, weights)
    with pytest.raises(ValueError, match="weights"):
        weighted_softmax_ce(logits, labels, weights[:2])
