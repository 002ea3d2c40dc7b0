"""Shared fixtures: an isolated data cache, a tiny, easy protocol for learning tests, and a headless browser."""

import importlib.util
import shutil
from pathlib import Path

import pytest

TINY_PROTOCOL = """\
name: tiny_easy
description: Tiny easy SynthAU protocol for tests (strong cues, little nuisance).
data: {source: synth, profile: bp4d, overrides: {difficulty: 0.25}}
split: {kind: kfold, n_folds: 3}
aus: [4, 12]
selection: strict
budgets:
  quick: &tiny {data: {subjects: 12, sequences_per_subject: 2, frame_stride: 10, image_size: 48}, crop_size: 40,
                init: scratch}
  standard: *tiny
  full: *tiny
"""

# The same easy data labelled with two frequent AUs with strong cues (smile, cheek raiser): where contrastive
# pretraining from scratch learns within a test's budget (rare AUs need far more).
TINY_FREQUENT_PROTOCOL = TINY_PROTOCOL.replace("name: tiny_easy", "name: tiny_easy_frequent").replace(
    "aus: [4, 12]", "aus: [6, 12]")

TINY_METHODS = {
    "tiny_wce": """\
name: tiny_wce
recipe: supervised
model: {backbone: resnet18, graph: true, dim: 64}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, weight_decay: 1.0e-4, batch_size: 32, epochs: 12}
""",
    "tiny_fast_wce": """\
name: tiny_fast_wce
recipe: supervised
model: {backbone: test_resnet, graph: false, dim: 16}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 2}
""",  # for tests of the harness, not of learning: seconds a run
    "tiny_one_epoch_aunce": """\
name: tiny_one_epoch_aunce
recipe: contrastive_probe
model: {backbone: test_resnet, graph: true, dim: 16}
loss: {name: aunce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 1}
probe: {optimizer: adam, lr: 1.0e-2, batch_size: 64, epochs: 3}
""",  # the whole contrastive path (pretraining, recalibration, probe) in seconds
    "tiny_aunce": """\
name: tiny_aunce
recipe: contrastive_probe
model: {backbone: resnet18, graph: true, dim: 64}
loss: {name: aunce, temperature: 0.5, positive_probs: [0.0, 1.0, 0.0]}   # as the CPU budgets of aunce.yaml
train: {optimizer: adamw, lr: 2.0e-3, weight_decay: 1.0e-6, batch_size: 32, epochs: 8}
probe: {optimizer: adam, lr: 1.0e-2, weight_decay: 1.0e-6, batch_size: 128, epochs: 60}
""",
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Generated SynthAU data goes to one temporary cache shared by the whole test session; the default data
    root of prepared datasets is an empty temporary folder."""
    monkeypatch.setenv("AUNCE_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("AUNCE_BENCH_DATA", str(tmp_path_factory.getbasetemp() / "no-data"))


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory):
    """Paths of the tiny protocols and tiny methods."""
    folder = tmp_path_factory.mktemp("specs")
    (folder / "tiny_easy.yaml").write_text(TINY_PROTOCOL)
    (folder / "tiny_easy_frequent.yaml").write_text(TINY_FREQUENT_PROTOCOL)
    for name, text in TINY_METHODS.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not shutil.which("chromium"):
        return "no chromium executable on PATH (apt-get install chromium)"
    return None


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_of():
    """Open a report in headless Chromium; yields open(path) -> (page, requests, dialogs)."""
    missing = _browser_missing()
    if missing:
        pytest.skip(f"browser test needs playwright and chromium: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)

        def open_page(path: Path):
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            requests, dialogs = [], []
            page.on("request", lambda request: requests.append(request.url))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(path.as_uri())
            return page, requests, dialogs

        yield open_page
        browser.close()
