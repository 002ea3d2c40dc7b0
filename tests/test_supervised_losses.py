"""The supervised baselines' losses (bce, focal, asl, gce) against independent float64 computations and the
libraries they call, and each learning on the tiny easy protocol's frequent AUs (smile, cheek raiser)."""

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from aunce_bench.losses import supervised
from aunce_bench.losses.weighted import weighted_bce
from test_harness import run_and_load


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 5, generator=generator) * 2
    labels = (torch.rand(16, 5, generator=generator) < 0.3).long()
    labels[torch.rand(16, 5, generator=generator) < 0.2] = -1  # missing entries
    weights = torch.rand(5, generator=generator) + 0.5
    return logits, labels, weights


def _reference(batch, per_entry):
    """Mean over the labelled entries of per_entry(p, y, w) in float64."""
    logits, labels, weights = batch
    p, y = torch.sigmoid(logits.double()), labels.clamp(min=0).double()
    w = weights.double().expand_as(p)
    labelled = labels >= 0
    return per_entry(p, y, w)[labelled].mean().item()


def test_bce_is_unweighted_binary_cross_entropy(batch):
    expected = _reference(batch, lambda p, y, w: -(y * p.log() + (1 - y) * (1 - p).log()))
    assert supervised.bce(*batch).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_focal_matches_its_formula_and_torchvision(batch, alpha, gamma):
    def focal(p, y, w):
        p_t = y * p + (1 - y) * (1 - p)
        alpha_t = y * alpha + (1 - y) * (1 - alpha)
        return -alpha_t * (1 - p_t) ** gamma * p_t.log()

    assert supervised.focal(*batch, alpha=alpha, gamma=gamma).item() == pytest.approx(_reference(batch, focal), rel=1e-5)
    logits, labels, weights = batch
    complete = labels.clamp(min=0)  # without missing entries it is torchvision's mean
    expected = sigmoid_focal_loss(logits, complete.float(), alpha=alpha, gamma=gamma, reduction="mean")
    assert supervised.focal(logits, complete, weights, alpha=alpha, gamma=gamma).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip"), [(4.0, 1.0, 0.05), (2.0, 0.0, 0.0), (1.0, 1.0, 0.2)])
def test_asymmetric_loss_matches_its_formula(batch, gamma_neg, gamma_pos, clip):
    def asl(p, y, w):
        shifted = (p - clip).clamp(min=0)
        return -(y * (1 - p) ** gamma_pos * p.clamp(min=1e-8).log()
                 + (1 - y) * shifted ** gamma_neg * (1 - shifted).clamp(min=1e-8).log())

    got = supervised.asymmetric(*batch, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip).item()
    assert got == pytest.approx(_reference(batch, asl), rel=1e-5)


@pytest.mark.parametrize("q", [0.3, 0.7, 1.0])
def test_gce_matches_its_formula(batch, q):
    expected = _reference(batch, lambda p, y, w: w * (1 - (y * p + (1 - y) * (1 - p)) ** q) / q)
    assert supervised.gce(*batch, q=q).item() == pytest.approx(expected, rel=1e-5)


def test_gce_tends_to_weighted_bce_as_q_falls(batch):
    assert supervised.gce(*batch, q=1e-4).item() == pytest.approx(weighted_bce(*batch).item(), rel=1e-3)
    with pytest.raises(ValueError, match="q must lie in"):
        supervised.gce(*batch, q=0.0)


@pytest.mark.parametrize("loss", [supervised.bce, supervised.focal, supervised.asymmetric, supervised.gce])
def test_missing_entries_give_no_loss_and_no_gradient(loss, batch):
    logits, labels, weights = batch
    logits = logits.clone().requires_grad_()
    loss(logits, labels, weights).backward()
    assert torch.all(logits.grad[labels < 0] == 0) and torch.isfinite(logits.grad).all()
    assert loss(logits, torch.full_like(labels, -1), weights).item() == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["focal", "asl", "gce"])
def test_each_baseline_learns_on_frequent_aus_of_the_tiny_easy_protocol(name, tiny_specs, tmp_path):
    method = tmp_path / "specs"
    method.mkdir()
    # focal at gamma 1: at the default 2 its gradients are a fraction of BCE's and 12 epochs barely move it
    options = {"focal": "{name: focal, alpha: 0.5, gamma: 1.0}", "asl": "{name: asl}", "gce": "{name: gce, q: 0.7}"}
    (method / f"tiny_{name}.yaml").write_text((tiny_specs / "tiny_wce.yaml").read_text()
                                              .replace("name: tiny_wce", f"name: tiny_{name}")
                                              .replace("loss: {name: wce}", f"loss: {options[name]}"))
    (method / "tiny_easy_frequent.yaml").write_text((tiny_specs / "tiny_easy_frequent.yaml").read_text())
    _, _, stored = run_and_load(method, f"tiny_{name}", tmp_path, protocol="tiny_easy_frequent")
    training = stored["provenance"]["training"]
    assert training["final_loss"] < 0.8 * training["first_loss"]
    assert stored["mean_f1"] > stored["chance_f1"] + 0.05, stored["per_au_f1"]
