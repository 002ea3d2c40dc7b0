"""The contrastive baselines (supcon, simclr, hcl/dcl) and the noise-robust losses (elr, co-teaching) against
independent float64 computations, and each recipe learning on the tiny easy protocol's frequent AUs."""

import math

import pytest
import torch
import torch.nn.functional as F

from aunce_bench.losses.contrastive import hcl, simclr, supcon
from aunce_bench.losses.noise_robust import ELR, coteaching
from aunce_bench.losses.weighted import weighted_bce
from test_harness import run_and_load


@pytest.fixture
def views():
    generator = torch.Generator().manual_seed(5)
    z1 = F.normalize(torch.randn(6, 3, 4, generator=generator), dim=-1)
    z2 = F.normalize(z1 + 0.5 * torch.randn(6, 3, 4, generator=generator), dim=-1)
    labels = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, -1], [1, 0, 0], [0, 1, 1]])
    return z1, z2, labels


def _stacked(z1, z2, k):
    return torch.cat([z1[:, k], z2[:, k]]).double()


def _supcon_reference(z1, z2, labels, temperature):
    """Khosla et al.'s L_out per AU over the labelled views, written as loops."""
    per_au = []
    for k in range(labels.shape[1]):
        z, y = _stacked(z1, z2, k), torch.cat([labels, labels])[:, k]
        rows = [i for i in range(len(y)) if y[i] >= 0]
        losses = []
        for i in rows:
            others = [a for a in rows if a != i]
            denominator = sum(math.exp(z[i] @ z[a] / temperature) for a in others)
            positives = [p for p in others if y[p] == y[i]]
            losses.append(-sum(math.log(math.exp(z[i] @ z[p] / temperature) / denominator) for p in positives)
                          / len(positives))
        per_au.append(sum(losses) / len(losses))
    return sum(per_au) / len(per_au)


def _hcl_reference(z1, z2, temperature, tau_plus, beta):
    """Robinson et al.'s objective per AU, anchor by anchor."""
    per_au = []
    for k in range(z1.shape[1]):
        z, n = _stacked(z1, z2, k), 2 * z1.shape[0]
        losses = []
        for i in range(n):
            other = (i + n // 2) % n
            pos = math.exp(z[i] @ z[other] / temperature)
            neg = [math.exp(z[i] @ z[a] / temperature) for a in range(n) if a not in (i, other)]
            importance = [v ** beta for v in neg]  # exp(beta s) = exp(s) ** beta
            reweighted = sum(w * v for w, v in zip(importance, neg)) / (sum(importance) / len(neg))
            ng = max((reweighted - tau_plus * len(neg) * pos) / (1 - tau_plus), len(neg) * math.exp(-1 / temperature))
            losses.append(-math.log(pos / (pos + ng)))
        per_au.append(sum(losses) / n)
    return sum(per_au) / len(per_au)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_is_the_per_au_supervised_contrastive_loss(views, temperature):
    z1, z2, labels = views
    assert supcon(z1, z2, labels, temperature=temperature).item() == pytest.approx(
        _supcon_reference(z1, z2, labels, temperature), rel=1e-5)


@pytest.mark.parametrize(("temperature", "tau_plus", "beta"), [(0.5, 0.1, 1.0), (0.2, 0.05, 0.5), (0.5, 0.1, 0.0)])
def test_hcl_matches_the_authors_objective(views, temperature, tau_plus, beta):
    z1, z2, labels = views
    assert hcl(z1, z2, labels, temperature=temperature, tau_plus=tau_plus, beta=beta).item() == pytest.approx(
        _hcl_reference(z1, z2, temperature, tau_plus, beta), rel=1e-5)


def test_hcl_without_debiasing_or_hardness_is_simclr(views):
    """beta 0 and tau_plus 0 leave plain NT-Xent: our hcl against pytorch-metric-learning's NTXentLoss."""
    z1, z2, labels = views
    assert hcl(z1, z2, labels, temperature=0.5, tau_plus=0.0, beta=0.0).item() == pytest.approx(
        simclr(z1, z2, labels, temperature=0.5).item(), rel=1e-5)


def test_self_supervised_losses_ignore_labels(views):
    z1, z2, labels = views
    for loss in (simclr, hcl):
        assert loss(z1, z2, labels).item() == pytest.approx(loss(z1, z2, 1 - labels.clamp(min=0)).item())


def test_contrastive_losses_have_gradients_and_refuse_bad_input(views):
    z1, z2, labels = views
    for loss in (supcon, simclr, hcl):
        z = z1.clone().requires_grad_()
        loss(z, z2, labels).backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        supcon(z1, z2[:, :2], labels)
    with pytest.raises(ValueError, match="temperature"):
        simclr(z1, z2, labels, temperature=0.0)
    with pytest.raises(ValueError, match="tau_plus"):
        hcl(z1, z2, labels, tau_plus=1.0)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(10, 3, generator=generator) * 2
    labels = (torch.rand(10, 3, generator=generator) < 0.4).long()
    labels[torch.rand(10, 3, generator=generator) < 0.2] = -1
    weights = torch.rand(3, generator=generator) + 0.5
    return logits, labels, weights


def test_elr_adds_the_early_learning_term_with_running_targets(batch):
    logits, labels, weights = batch
    elr = ELR(n_frames=20, n_aus=3, beta=0.7, lam=3.0)
    index = torch.arange(5, 15)
    p = torch.sigmoid(logits.double()).clamp(1e-4, 1 - 1e-4)
    labelled = labels >= 0
    target = torch.zeros(10, 3, 2, dtype=torch.float64)
    for _ in range(2):  # the second call sees targets averaged over both visits
        target = 0.7 * target + 0.3 * torch.stack([p, 1 - p], -1)
        regulariser = torch.log(1 - (p * target[..., 0] + (1 - p) * target[..., 1]))[labelled].mean()
        expected = weighted_bce(logits.double(), labels, weights.double()) + 3.0 * regulariser
        assert elr(logits, labels, weights, index=index).item() == pytest.approx(expected.item(), abs=1e-5)
    assert elr.targets[:5].abs().sum() == 0 and elr.targets[5:15].abs().sum() > 0  # only the visited frames


def test_coteaching_trains_each_network_on_its_peers_small_loss_entries(batch):
    logits_a, labels, weights = batch
    logits_b = torch.flip(logits_a, dims=[0])
    loss_a, loss_b = coteaching(logits_a, logits_b, labels, weights, epoch=0, forget_rate=0.5, ramp_epochs=2)
    assert loss_a.item() == pytest.approx(weighted_bce(logits_a, labels, weights).item(), rel=1e-6)  # no forgetting yet

    def entry_loss(logits):
        return weights * F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float(), reduction="none")

    loss_a, loss_b = coteaching(logits_a, logits_b, labels, weights, epoch=3, forget_rate=0.5, ramp_epochs=2)
    for mine, peer, loss in ((logits_a, logits_b, loss_a), (logits_b, logits_a, loss_b)):
        kept = []
        for k in range(3):  # per AU: the ceil(0.5 n) labelled entries the peer finds easiest
            rows = [i for i in range(10) if labels[i, k] >= 0]
            easiest = sorted(rows, key=lambda i: entry_loss(peer)[i, k].item())[:math.ceil(0.5 * len(rows))]
            kept += [entry_loss(mine)[i, k].item() for i in easiest]
        assert loss.item() == pytest.approx(sum(kept) / len(kept), rel=1e-5)


TINY_RECIPES = {
    # lam 1: at the paper's 3 the regulariser holds the tiny run's 12 epochs near its first predictions
    "elr": ("recipe: supervised", "loss: {name: elr, beta: 0.7, lam: 1.0}"),
    "coteaching": ("recipe: coteaching", "loss: {name: coteaching, forget_rate: 0.2, ramp_epochs: 3}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elr", "coteaching"])
def test_noise_robust_methods_learn_on_the_tiny_easy_protocol(name, tiny_specs, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / f"tiny_{name}.yaml").write_text((tiny_specs / "tiny_wce.yaml").read_text()
                                              .replace("name: tiny_wce", f"name: tiny_{name}")
                                              .replace("recipe: supervised", TINY_RECIPES[name][0])
                                              .replace("loss: {name: wce}", TINY_RECIPES[name][1]))
    (folder / "tiny_easy_frequent.yaml").write_text((tiny_specs / "tiny_easy_frequent.yaml").read_text())
    _, _, stored = run_and_load(folder, f"tiny_{name}", tmp_path, protocol="tiny_easy_frequent")
    training = stored["provenance"]["training"]
    assert training["final_loss"] < 0.8 * training["first_loss"]
    assert stored["mean_f1"] > stored["chance_f1"] + 0.05, stored["per_au_f1"]


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "beats_chance"), [("{name: supcon, temperature: 0.1}", True),
                                                    ("{name: simclr, temperature: 0.5}", False),
                                                    ("{name: hcl, temperature: 0.5, tau_plus: 0.1, beta: 1.0}", True)])
def test_contrastive_baselines_learn_on_the_tiny_easy_protocol(loss, beats_chance, tiny_specs, tmp_path):
    """Every loss falls; the probe beats chance after supcon and hcl. simclr's label-free views do not within the
    tiny budget (measured F1: 0.608 and 0.343 against chance 0.616; at synth_bp4d_3fold quick 0.314 against 0.492),
    so for it the loss has to fall and the probe to tell frames apart."""
    folder = tmp_path / "specs"
    folder.mkdir()
    aunce_loss = "loss: {name: aunce, temperature: 0.5, positive_probs: [0.0, 1.0, 0.0]}"
    (folder / "tiny_contrastive.yaml").write_text((tiny_specs / "tiny_aunce.yaml").read_text()
                                                  .replace("name: tiny_aunce", "name: tiny_contrastive")
                                                  .replace(aunce_loss, f"loss: {loss}"))
    (folder / "tiny_easy_frequent.yaml").write_text((tiny_specs / "tiny_easy_frequent.yaml").read_text())
    run, store, stored = run_and_load(folder, "tiny_contrastive", tmp_path, protocol="tiny_easy_frequent")
    training = stored["provenance"]["training"]
    assert training["pretrain_final_loss"] < training["pretrain_first_loss"]
    if beats_chance:
        assert stored["mean_f1"] > stored["chance_f1"] + 0.03, stored["per_au_f1"]
    else:
        assert store.predictions(run.run_id).column("prob_AU12").to_numpy().std() > 0
