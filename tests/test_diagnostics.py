"""`aunce-bench run --keep-embeddings` and `aunce-bench diagnose`: the numerics against naive float64 loops and
sampled von Mises-Fisher data, the kept embeddings (run id unchanged, skip and redo), the page, its errors and
its rendering in a real browser.

One tiny store for the module, on tiny_easy with half its subjects: tiny_aunce (contrastive, aunce loss) kept on
fold 1, and tiny_wce (supervised) run first without, then with --keep-embeddings, one epoch each.
"""

import hashlib
import inspect
import math
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import vonmises_fisher
from typer.testing import CliRunner

from aunce_bench.cli import app
from conftest import TINY_METHODS, TINY_PROTOCOL
from aunce_bench.data.noise import CLEAN, NoiseSpec
from aunce_bench.embeddings import KeptEmbeddings, embeddings_path
from aunce_bench.losses.aunce import aunce_loss
from aunce_bench.protocols import plan_runs
from aunce_bench.report.diagnostics import AUNCE_DEFAULTS, BINS, Reweighting, au_diagnostics, diagnose, vmf_kappa
from aunce_bench.results import ResultStore
from aunce_bench.specs import load_method, load_protocol

runner = CliRunner()
FAST = {"tiny_aunce": (("epochs: 8", "epochs: 1"), ("epochs: 60", "epochs: 5")), "tiny_wce": (("epochs: 12", "epochs: 1"),)}


# ------------------------------------------------------------------------------------------- numerics
def _unit(rng, *shape):
    z = rng.normal(size=shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def test_per_au_measures_match_naive_float64_loops():
    rng = np.random.default_rng(7)
    z = _unit(rng, 23, 2, 5)
    labels = rng.integers(-1, 2, size=(23, 2))
    weights = Reweighting(temperature=0.3, exponent_pos=1.5, exponent_neg=0.6, source="test")
    results = diagnose(KeptEmbeddings(z, labels, ["AU1", "AU2"]), weights)
    for k, result in enumerate(results):
        frames = [i for i in range(len(z)) if labels[i, k] >= 0]
        positive, negative, all_pairs = [], [], []
        for a, i in enumerate(frames):
            for j in frames[a + 1:]:
                cosine = sum(float(z[i, k, d]) * float(z[j, k, d]) for d in range(5))
                distance = sum((float(z[i, k, d]) - float(z[j, k, d])) ** 2 for d in range(5))
                all_pairs.append(distance)
                (positive if labels[i, k] == labels[j, k] else negative).append((cosine, distance))
        assert result.frames == result.labelled == len(frames)
        assert result.positive_pairs == len(positive) and result.negative_pairs == len(negative)
        assert np.array_equal(result.positive_counts, np.histogram([c for c, _ in positive], BINS)[0])
        assert np.array_equal(result.negative_counts, np.histogram([c for c, _ in negative], BINS)[0])
        assert result.alignment == pytest.approx(sum(d for _, d in positive) / len(positive), rel=1e-12)
        uniformity = math.log(sum(math.exp(-2 * d) for d in all_pairs) / len(all_pairs))
        assert result.uniformity == pytest.approx(uniformity, rel=1e-12)
        for present, stats in ((1, result.present), (0, result.absent)):
            exponent = weights.exponent_pos if present else weights.exponent_neg
            anchor_weights, hard = [], []  # AUNCE's weight of each negative of each anchor of this class; is it hard
            for a in frames:
                if labels[a, k] != present:
                    continue
                own = [j for j in frames if j != a and labels[j, k] == present]
                mean_positive = sum(sum(float(z[a, k, d]) * float(z[j, k, d]) for d in range(5)) for j in own) / len(own)
                for neg in frames:
                    if labels[neg, k] != present:
                        cosine = sum(float(z[a, k, d]) * float(z[neg, k, d]) for d in range(5))
                        anchor_weights.append(math.exp((exponent - 1) * cosine / weights.temperature))
                        hard.append(cosine > mean_positive)
            assert stats.frames == sum(labels[i, k] == present for i in frames)
            assert stats.hard_share == pytest.approx(sum(hard) / len(hard))
            assert stats.mean_weight == pytest.approx(sum(anchor_weights) / len(anchor_weights), rel=1e-12)


def test_frames_are_subsampled_deterministically():
    rng = np.random.default_rng(1)
    z, labels = _unit(rng, 300, 16), rng.integers(0, 2, size=300)
    weights = Reweighting.of_loss(None)
    first = au_diagnostics(z, labels, "AU1", weights, max_frames=50, seed=[0, 3])
    again = au_diagnostics(z, labels, "AU1", weights, max_frames=50, seed=[0, 3])
    assert first.frames == 50 and first.labelled == 300
    assert first.positive_pairs + first.negative_pairs == 50 * 49 // 2
    assert np.array_equal(first.positive_counts, again.positive_counts) and first.alignment == again.alignment
    other = au_diagnostics(z, labels, "AU1", weights, max_frames=50, seed=[0, 4])
    assert other.alignment != first.alignment


@pytest.mark.parametrize(("dim", "kappa"), [(16, 10.0), (64, 40.0), (512, 2000.0)])
def test_vmf_concentration_recovers_the_sampled_one(dim, kappa):
    mu = np.zeros(dim)
    mu[0] = 1.0
    samples = vonmises_fisher(mu, kappa).rvs(3000, random_state=np.random.default_rng(dim))
    assert vmf_kappa(samples) == pytest.approx(kappa, rel=0.08)
    if dim == 16:  # where scipy's maximum-likelihood fit works, the approximation agrees with it
        assert vmf_kappa(samples) == pytest.approx(vonmises_fisher.fit(samples)[1], rel=0.02)


def test_small_classes_report_nothing_instead_of_failing():
    rng = np.random.default_rng(2)
    z = _unit(rng, 6, 8)
    one_present = au_diagnostics(z, np.array([0, 0, 0, 0, 1, -1]), "AU1", Reweighting.of_loss(None))
    assert one_present.present.frames == 1 and one_present.present.kappa is None
    assert one_present.absent.kappa is not None and one_present.absent.hard_share is not None
    assert one_present.present.hard_share is None  # a single present frame has no positive to compare with
    all_absent = au_diagnostics(z, np.zeros(6, dtype=int), "AU1", Reweighting.of_loss(None))
    assert all_absent.present.frames == 0 and all_absent.absent.hard_share is None and all_absent.negative_pairs == 0
    single = au_diagnostics(z, np.array([-1, -1, -1, -1, -1, 1]), "AU1", Reweighting.of_loss(None))
    assert single.alignment is None and single.uniformity is None and single.positive_pairs == 0
    collapsed = au_diagnostics(np.tile(z[:1], (4, 1)), np.ones(4, dtype=int), "AU1", Reweighting.of_loss(None))
    assert collapsed.present.kappa == math.inf and collapsed.alignment == pytest.approx(0.0, abs=1e-12)


def test_reweighting_is_the_runs_aunce_loss_or_aunces_defaults():
    defaults = {name: p.default for name, p in inspect.signature(aunce_loss).parameters.items() if name in AUNCE_DEFAULTS}
    assert defaults == AUNCE_DEFAULTS
    own = Reweighting.of_loss({"name": "aunce", "temperature": 0.2, "exponent_pos": 1.5})
    assert (own.temperature, own.exponent_pos, own.exponent_neg) == (0.2, 1.5, 0.8) and "aunce loss" in own.source
    other = Reweighting.of_loss({"name": "wce"})
    assert (other.temperature, other.exponent_pos, other.exponent_neg) == (0.5, 1.2, 0.8)
    assert other.source == "AUNCE's defaults (the run's loss is wce)"


# ------------------------------------------------------------------------------------ kept embeddings
def _run(method: Path, protocol: Path, db: Path, *extra: str):
    return runner.invoke(app, ["run", "--method", str(method), "--protocol", str(protocol), "--quick", "--folds", "1",
                               "--db", str(db), *extra])


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """The module's store: {"db", "folder" (of the method YAMLs), "protocol" (its YAML), "runs" (CLI results by
    step), "ids" (method -> run id, planned without --keep-embeddings)}."""
    folder = tmp_path_factory.mktemp("diagnostics")
    for name, replacements in FAST.items():
        text = TINY_METHODS[name]
        for old, new in replacements:
            text = text.replace(old, new)
        (folder / f"{name}.yaml").write_text(text)
    protocol, db = folder / "tiny_easy.yaml", folder / "results.sqlite"
    protocol.write_text(TINY_PROTOCOL.replace("subjects: 12", "subjects: 6"))
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUNCE_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        results["aunce"] = _run(folder / "tiny_aunce.yaml", protocol, db, "--keep-embeddings")
        results["aunce again"] = _run(folder / "tiny_aunce.yaml", protocol, db, "--keep-embeddings")
        results["wce"] = _run(folder / "tiny_wce.yaml", protocol, db)
        results["wce kept"] = _run(folder / "tiny_wce.yaml", protocol, db, "--keep-embeddings")
        ids = {name: plan_runs(load_method(str(folder / f"tiny_{name}.yaml")), load_protocol(str(protocol)), "quick",
                               [1], [0], NoiseSpec(CLEAN, 0.0))[0].run_id for name in ("aunce", "wce")}
    for name, result in results.items():
        assert result.exit_code == 0, (name, result.output)
    return {"db": db, "folder": folder, "protocol": protocol, "runs": results, "ids": ids}


def test_run_keeps_test_embeddings_under_the_same_run_id(kept):
    run_id = kept["ids"]["aunce"]  # planned without --keep-embeddings
    with ResultStore(kept["db"]) as store:
        assert store.status(run_id) == "done"
        path = embeddings_path(store, run_id)
        record = store.provenance(run_id)["embeddings"]
        stored_labels = store.predictions(run_id, ["label_AU4", "label_AU12"])
    assert path == kept["db"].parent / "results.embeddings" / f"{run_id}.npz"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with np.load(path) as data:
        z, labels, aus = data["z"], data["labels"], data["aus"].tolist()
    assert aus == ["AU4", "AU12"] and z.dtype == np.float16 and z.shape == (record["frames"], 2, 64)
    assert np.allclose(np.linalg.norm(z.astype(np.float64), axis=-1), 1.0, atol=2e-3)
    assert np.array_equal(labels[:, 0], stored_labels.column("label_AU4").to_numpy())
    assert np.array_equal(labels[:, 1], stored_labels.column("label_AU12").to_numpy())
    assert "already done, skipping" in kept["runs"]["aunce again"].output
    assert "1 skipped" in kept["runs"]["aunce again"].output


def test_a_done_run_without_embeddings_is_redone_to_keep_them(kept):
    assert "1 done" in kept["runs"]["wce"].output
    assert "skipping" not in kept["runs"]["wce kept"].output and "1 done" in kept["runs"]["wce kept"].output
    with ResultStore(kept["db"]) as store:
        assert [run["run_id"] for run in store.runs(status="done") if run["method"] == "tiny_wce"] == [kept["ids"]["wce"]]
        assert "embeddings" in store.provenance(kept["ids"]["wce"])


def test_diagnose_writes_the_page_and_the_report_links_it(kept, tmp_path):
    db, out = kept["db"], tmp_path / "reports"
    by_id = runner.invoke(app, ["diagnose", kept["ids"]["aunce"], "--db", str(db), "--out", str(out)])
    assert by_id.exit_code == 0, by_id.output
    by_setting = runner.invoke(app, ["diagnose", "--method", str(kept["folder"] / "tiny_wce.yaml"), "--protocol",
                                     str(kept["protocol"]), "--quick", "--db", str(db), "--out", str(out)])
    assert by_setting.exit_code == 0, by_setting.output
    for name, result, source in (("aunce", by_id, "the run&#39;s aunce loss"),
                                 ("wce", by_setting, "AUNCE&#39;s defaults (the run&#39;s loss is wce)")):
        html, png = out / "diagnostics" / f"{kept['ids'][name]}.html", out / "diagnostics" / f"{kept['ids'][name]}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        page = html.read_text()
        assert source in page and page.count("<svg") == 1 and "AU4" in page and "AU12" in page
        assert "wrote" in result.output and html.name in result.output.replace("\n", "")
        assert "align" in result.output and "κ absent" in result.output
    report = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), "--resamples", "100"])
    assert report.exit_code == 0, report.output
    index = (out / "index.html").read_text()
    assert all(f'href="diagnostics/{run_id}.html"' in index for run_id in kept["ids"].values())


def _copy_store(kept, folder: Path) -> Path:
    """A copy of the module's store (the database through SQLite's backup, and its embeddings)."""
    db = folder / "copy.sqlite"
    with sqlite3.connect(kept["db"]) as source, sqlite3.connect(db) as target:
        source.backup(target)
    shutil.copytree(kept["db"].parent / "results.embeddings", folder / "copy.embeddings")
    return db


@pytest.mark.parametrize("case", ["unknown run", "no embeddings kept", "file missing", "file damaged",
                                  "both forms", "setting not run"])
def test_diagnose_errors_are_one_line(case, kept, tmp_path):
    db = _copy_store(kept, tmp_path)
    run_id = kept["ids"]["aunce"]
    arguments = [run_id]
    if case == "unknown run":
        arguments, message = ["0123456789abcdef0123"], f"no run 0123456789abcdef0123 in {db}"
    elif case == "no embeddings kept":
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET provenance_json = json_remove(provenance_json, '$.embeddings')")
        message = f"no embeddings kept for run {run_id}; run `aunce-bench run --method tiny_aunce"
    elif case == "file missing":
        (tmp_path / "copy.embeddings" / f"{run_id}.npz").unlink()
        message = "embeddings of run"
    elif case == "file damaged":
        path = tmp_path / "copy.embeddings" / f"{run_id}.npz"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        message = f"{path}: embeddings damaged (sha256 mismatch); run `aunce-bench run"
    elif case == "both forms":
        arguments, message = [run_id, "--method", "tiny_aunce"], "give a RUN_ID or --method and --protocol, not both"
    else:
        arguments = ["--method", str(kept["folder"] / "tiny_wce.yaml"), "--protocol", str(kept["protocol"]),
                     "--quick", "--fold", "2"]
        message = "no run of tiny_wce on tiny_easy (quick budget, fold 2, seed 0, clean labels)"
    result = runner.invoke(app, ["diagnose", *arguments, "--db", str(db), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert ("--keep-embeddings" in result.stderr) == (case not in ("unknown run", "both forms"))  # the fix, named
    assert not (tmp_path / "out" / "diagnostics").exists()


def test_diagnostics_page_in_a_real_browser(kept, page_of, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(app, ["diagnose", kept["ids"]["aunce"], "--db", str(kept["db"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out / "diagnostics" / f"{kept['ids']['aunce']}.html"
    page, requests, dialogs = page_of(html)
    artifacts = Path(os.environ.get("AUNCE_BENCH_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "diagnostics_screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"diagnostics screenshot: {screenshot}")
    assert screenshot.stat().st_size > 20_000
    rows = page.locator("table.diagnostics tbody tr")
    assert rows.count() == 2 and rows.first.locator("td").first.inner_text() == "AU4"
    figure = page.locator("#histograms svg")
    assert figure.is_visible() and figure.bounding_box()["width"] > 400
    assert requests == [html.as_uri()] and dialogs == []
