"""`aunce-bench report`, `noise-curve` and `results --leaderboard`: one aggregation, escaped HTML, a real browser.

Two stores: tiny real runs (tiny_easy protocol, tiny_wce/tiny_aunce for one epoch) made through the CLI, and a
synthetic store (shipped protocol and method specs, predictions drawn per method skill, metrics computed by
aunce_bench.metrics) that covers every report section in a few seconds.
"""

import hashlib
import json
import os
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.synth.generate import POSE_BINS, pose_bin_name
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.metrics import au_metrics, chance_f1, grouped_au_metrics, mean_f1, summarise
from aunce_bench.protocols import plan_runs
from aunce_bench.report import aggregate, build, curves, exports
from aunce_bench.report.aggregate import leaderboards
from aunce_bench.results import ResultStore
from aunce_bench.specs import PaperReference, load_method, load_protocol

runner = CliRunner()
EVIL = "evil<script>alert(1)</script>$x$"


# ------------------------------------------------------------------------------------ synthetic store
def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def synthetic_history(run, skill, epochs=None):
    """A plausible per-epoch history of `run`'s stages (as launch stores one): the SynthFace pretraining its
    init starts from (the same for every run), then its recipe's stages; loss falling, validation F1 (None
    without validation subjects and in pretraining stages) rising towards the method's skill. `epochs` (stage ->
    count) replaces stages' epoch counts (a run stopped early)."""
    method = run.method
    stages = [("init pretraining (SynthFace)", 4)] if run.init.kind == "synthface" else []
    probe = [("linear probe", method.probe.epochs)] if method.probe else []
    stages += {"contrastive_probe": [("contrastive pretraining", method.train.epochs), *probe],
               "coteaching": [("co-teaching", method.train.epochs)], "frozen_probe": probe,
               }.get(method.recipe, [("supervised", method.train.epochs), *probe])
    history = []
    for stage, count in stages:
        shared = stage.startswith("init pretraining")
        rng = _rng("history", run.crop_size) if shared else _rng("history", run.run_id, stage)
        validated = stage in ("supervised", "co-teaching", "linear probe") and run.selection == "strict"
        count = (epochs or {}).get(stage, count)
        for epoch in range(1, count + 1):
            progress = 1 - np.exp(-3 * epoch / count)
            history.append({"stage": stage, "epoch": epoch, "loss": 2.0 - 1.2 * progress + rng.normal(0, 0.03),
                            "lr": 1e-3, "images_per_s": 100.0,
                            "val_f1": 0.2 * skill * progress + rng.normal(0, 0.01) if validated else None})
    return history


def store_synthetic_run(store, run, skill, frames_per_subject=4, history=True, predict=None):
    """Store `run` as done with predictions of the given skill (or `predict(run, labels)`'s probabilities) on
    labels shared by every run of its fold, and a synthetic history (`history`: True, False for none as stores
    written before histories, or the entries)."""
    rates = PROFILES[run.test_data.dataset_name].labels.base_rates
    bins = [pose_bin_name(*b) for b in POSE_BINS] if getattr(run.test_data, "pose", None) == "bins" else ["frontal"]
    label_rng = _rng(run.protocol, run.fold_name)
    n = len(run.test_subjects) * frames_per_subject
    labels = (label_rng.random((n, len(run.aus))) < [rates[au] for au in run.aus]).astype(np.int8)
    labels[label_rng.random(labels.shape) < 0.03] = -1
    labels = np.tile(labels, (len(bins), 1))
    keys = {"subject": np.tile(np.repeat(run.test_subjects, frames_per_subject), len(bins)),
            "pose_bin": np.repeat(bins, n)}
    noise = run.noise
    rng = _rng(run.run_id)
    margin = skill * (1 - noise.rate)
    drawn = 1 / (1 + np.exp(-(margin * (2 * (labels == 1) - 1) + rng.normal(0, 1, labels.shape))))
    probabilities = predict(run, labels) if predict else drawn
    names = [f"AU{au}" for au in run.aus]
    if len(bins) > 1:
        metrics = grouped_au_metrics(probabilities, labels, np.char.add("pose:", keys["pose_bin"]), names)
    else:
        metrics = {"all": au_metrics(probabilities, labels, names)}
    predictions = dict(keys)
    for column, name in enumerate(names):
        predictions[f"prob_{name}"] = probabilities[:, column]
        predictions[f"label_{name}"] = labels[:, column]
    store.start_run(run.run_id, method=run.method.name, protocol=run.protocol, dataset=run.test_data.dataset_name,
                    budget=run.budget, fold=run.fold, seed=run.seed, noise=str(run.noise), spec=run.model_dump(mode="json"),
                    provenance={"versions": {"aunce_bench": "test"}, "device": "synthetic", "selection": "strict"})
    stored = {group: {au: vars(m) for au, m in per_au.items()} for group, per_au in metrics.items()}
    store.finish_run(run.run_id, metrics=stored,
                     mean_f1=mean_f1(metrics["all"]), chance_f1=chance_f1(labels, names), wall_s=12.0,
                     predictions=predictions, provenance_update={"train_images_per_s": 50.0},
                     history=synthetic_history(run, skill) if history is True else history or None)


def synthetic_runs(method, protocol, noise="none", seeds=(0,), name=None):
    spec = load_method(method)
    spec = spec.model_copy(update={"name": name}) if name else spec
    return plan_runs(spec, load_protocol(protocol), "quick", None, list(seeds), NoiseSpec.parse(noise))


SKILLS = {"wce": 2.2, "aunce": 0.9}
RAGGED = ("aunce", "synth_bp4d_3fold", 3, 1, "none")  # the run whose linear probe stops at 30 of 40 epochs


def fill_synthetic(db):
    with ResultStore(db) as store:
        for method, skill in SKILLS.items():
            plans = [*synthetic_runs(method, "synth_bp4d_3fold", seeds=(0, 1)),
                     *synthetic_runs(method, "synth_bp4d_3fold", "symmetric:0.2"),
                     *synthetic_runs(method, "synth_bp4d_3fold", "symmetric:0.4"),
                     *synthetic_runs(method, "synth_cross_dataset"), *synthetic_runs(method, "synth_pose")]
            for run in plans:
                history = True
                if run.protocol == "synth_cross_dataset":
                    history = False  # as stored before histories were recorded
                elif (run.method.name, run.protocol, run.fold, run.seed, str(run.noise)) == RAGGED:
                    history = synthetic_history(run, skill, epochs={"linear probe": 30})  # stopped early
                store_synthetic_run(store, run, skill, history=history)
    return db


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic store and the report built from it: (db, report folder)."""
    folder = tmp_path_factory.mktemp("synthetic")
    db = fill_synthetic(folder / "results.sqlite")
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(folder / "report")])
    assert result.exit_code == 0, result.output
    return db, folder / "report"


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """A store whose method name and reported source carry markup: (db, report folder)."""
    folder = tmp_path_factory.mktemp("evil")
    db = folder / "results.sqlite"
    method = load_method("wce")
    reported = [method.reported[0].model_copy(update={"source": "paper </script><script>alert(2)</script>"})]
    evil_method = method.model_copy(update={"name": EVIL, "reported": reported})
    with ResultStore(db) as store:
        for spec, skill in ((evil_method, 2.0), (load_method("aunce"), 1.0)):
            for run in plan_runs(spec, load_protocol("synth_bp4d_3fold"), "quick", [1], [0], NoiseSpec.parse("none")):
                store_synthetic_run(store, run, skill)
        store_synthetic_run(store, synthetic_runs("wce", "synth_bp4d_3fold", "symmetric:0.2")[0]
                            .model_copy(update={"method": evil_method}), 1.0)
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(folder / "report")])
    assert result.exit_code == 0, result.output
    return db, folder / "report"


def informed(run, labels):
    """Probabilities that follow the labels, with noise that depends on the labels only: the same for every
    method on the same frames."""
    rng = _rng("informed", labels.tobytes())
    return 1 / (1 + np.exp(-(2 * (2 * (labels == 1) - 1) + rng.normal(0, 1, labels.shape))))


def blind_to_au4(run, labels):
    """`informed`, except that AU4 is never predicted, and on fold 1 one AU1 hit is missed."""
    probabilities = informed(run, labels)
    probabilities[:, run.aus.index(4)] = 0.0
    if run.fold == 1:
        au1 = run.aus.index(1)
        probabilities[np.flatnonzero((labels[:, au1] == 1) & (probabilities[:, au1] >= 0.5))[0], au1] = 0.0
    return probabilities


HAND_MADE = {"wce": informed, "blind_au4": blind_to_au4, "silent": lambda run, labels: np.zeros(labels.shape)}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """Three methods on the same frames of synth_bp4d_3fold (one seed): `wce` informed, `blind_au4` the same but
    for AU4 (never predicted) and one missed AU1 hit, `silent` predicting nothing (below chance); the store and
    its report: (db, report folder)."""
    folder = tmp_path_factory.mktemp("hand_made")
    db = folder / "results.sqlite"
    with ResultStore(db) as store:
        for name, predict in HAND_MADE.items():
            for run in synthetic_runs("wce", "synth_bp4d_3fold", name=name):
                store_synthetic_run(store, run, 0.0, predict=predict)
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(folder / "report")])
    assert result.exit_code == 0, result.output
    return db, folder / "report"


# ---------------------------------------------------------------------------------- tiny real store
FAST = {"tiny_wce": ("epochs: 12", "epochs: 1"), "tiny_aunce": ("epochs: 8", "epochs: 1")}


@pytest.fixture(scope="module")
def tiny(tiny_specs, tmp_path_factory):
    """Tiny real runs through the CLI: tiny_wce and tiny_aunce on folds 1-2 (one epoch, timm's tiny test ResNet),
    then noise-curve adds tiny_wce at symmetric:0.2 and missing_positive:0.2 on fold 1 (overlaid) and reuses its
    clean run. Returns (db, noise-curve result, out folder)."""
    folder = tmp_path_factory.mktemp("tiny")
    for name, (old, new) in FAST.items():
        (folder / f"{name}.yaml").write_text((tiny_specs / f"{name}.yaml").read_text().replace(old, new)
                                             .replace("epochs: 60", "epochs: 5")
                                             .replace("backbone: resnet18, graph: true, dim: 64",
                                                      "backbone: test_resnet, graph: true, dim: 16"))
    protocol, db = str(tiny_specs / "tiny_easy.yaml"), folder / "results.sqlite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUNCE_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for name in FAST:
            result = runner.invoke(app, ["run", "--method", str(folder / f"{name}.yaml"), "--protocol", protocol,
                                         "--quick", "--folds", "1,2", "--db", str(db)])
            assert result.exit_code == 0, result.output
        curve = runner.invoke(app, ["noise-curve", "--methods", str(folder / "tiny_wce.yaml"), "--protocol", protocol,
                                    "--noise-type", "symmetric,missing_positive", "--levels", "0,0.2", "--quick", "--folds", "1",
                                    "--db", str(db), "--out", str(folder / "curves")])
    assert curve.exit_code == 0, curve.output
    return db, curve, folder


def invoke_json(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def section_of(html: str, name: str) -> str:
    """The markup of one section of a report page."""
    start = html.index(f'<section id="{name}">')
    return html[start:html.index("</section>", start)]


def test_leaderboard_numbers_equal_the_per_run_results(tiny, tmp_path):
    db, _, _ = tiny
    runs = [run for run in invoke_json("results", "--db", str(db)) if run["noise"] == "none"]
    [board] = invoke_json("results", "--db", str(db), "--leaderboard")
    assert (board["protocol"], board["test"], board["cross_dataset"]) == ("tiny_easy", "SynthAU bp4d", False)
    assert {row["method"] for row in board["rows"]} == {"tiny_wce", "tiny_aunce"}
    for row in board["rows"]:
        mine = [run for run in runs if run["method"] == row["method"]]
        mean, std = summarise([run["mean_f1"] for run in mine])
        assert row["runs"] == len(mine) == 2
        assert row["mean_f1"] == pytest.approx(mean, abs=1e-12) and row["std_f1"] == pytest.approx(std, abs=1e-12)
        for au in ("AU4", "AU12"):
            assert row["per_au_f1"][au] == pytest.approx(np.mean([run["per_au_f1"][au] for run in mine]), abs=1e-12)
    assert [row["rank"] for row in board["rows"]] == [1, 2]
    best, other = board["rows"]
    assert best["mean_f1"] >= other["mean_f1"] and best["difference_to_best"] is None
    # the bootstrap's point estimate, recomputed from stored predictions, is the stored mean-F1 difference
    assert other["difference_to_best"]["difference"] == pytest.approx(other["mean_f1"] - best["mean_f1"], abs=1e-9)
    assert other["difference_to_best"]["pairs"] == 2
    assert board["chance"]["mean_f1"] == pytest.approx(np.mean([r["chance_f1"] for r in runs[:2]]), abs=1e-12)
    assert board["reported"] == []  # tiny_easy names no paper dataset

    out = tmp_path / "report"
    assert runner.invoke(app, ["report", "--db", str(db), "--out", str(out)]).exit_code == 0
    assert json.loads((out / "leaderboards.json").read_text()) == [board]
    csv = (out / "leaderboards.csv").read_text().splitlines()
    assert csv[0].startswith("protocol,budget,test,data_fingerprint,init,decision_threshold,occurrence_threshold,"
                             "noise,kind,rank,method,family,selection") and len(csv) == 1 + 3
    assert f"{best['mean_f1']:.4f}" in csv[1]
    assert (out / "leaderboards.md").read_text().startswith("## tiny_easy · quick · SynthAU bp4d")
    html = (out / "index.html").read_text()
    assert f"{100 * best['mean_f1']:.1f}" in html and "tiny_aunce" in html
    stored = invoke_json("results", "--db", str(db))
    assert sum(run["run_id"] in section_of(html, "provenance") for run in stored) == 6  # every done run
    trained = ResultStore(db).runs()  # real runs store their history: each links to its own curves
    assert {entry["stage"] for run in trained for entry in run["history"]} == {
        "supervised", "contrastive pretraining", "linear probe"}  # tiny_easy starts from scratch: no pretraining
    for run in trained:
        assert f'href="#curves-{run["run_id"]}"' in html and html.count(f'id="curves-{run["run_id"]}"') == 1
    assert section_of(html, "curves").count('<figure class="curves"><svg') == 1


def test_noise_curve_reuses_stored_runs_and_prints_the_table(tiny):
    db, result, folder = tiny
    assert result.output.count("already done, skipping") == 1  # the clean fold-1 run
    for kind in ("symmetric", "missing_positive"):
        assert f"mean F1 under {kind} training-label noise: tiny_easy" in " ".join(result.output.split())  # rich wraps
    row = r"tiny_wce\s+│\s+\d\.\d{3}\s+│\s+\d\.\d{3}\s+│\s+[+-]\d\.\d{3}"  # clean, 0.2, drop; one run: no std
    assert re.search(row, result.output)
    noisy = [run for run in ResultStore(db).runs() if run["noise"] in ("symmetric:0.2", "missing_positive:0.2")]
    assert len(noisy) == 2 and {run["fold"] for run in noisy} == {1} and {run["status"] for run in noisy} == {"done"}
    chance = noisy[0]["chance_f1"]  # test labels stay clean: the same all-positive F1 at every rate
    assert re.search(rf"chance \(all-positive\)\s+│\s+{chance:.3f}\s+│\s+{chance:.3f}", result.output)
    html = next((folder / "curves").glob("noise_curve_tiny_easy_quick_symmetric_missing_positive.html")).read_text()
    assert "<svg" in html and "drop at 0.2" in html and "missing_positive and symmetric noise" in html
    assert "tiny_wce · symmetric" in html and "tiny_wce · missing_positive" in html  # one legend entry per kind
    assert html.count(f"<td>{100 * chance:.1f}</td>") == 4 and "all-positive predictor" in html
    png = folder / "curves" / "noise_curve_tiny_easy_quick_symmetric_missing_positive.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def board_of(out, protocol, test=None):
    boards = json.loads((out / "leaderboards.json").read_text())
    return next(b for b in boards if b["protocol"] == protocol and (test is None or b["test"] == test))


def test_report_sections_from_the_synthetic_store(synthetic):
    db, out = synthetic
    html = (out / "index.html").read_text()
    for section in ("leaderboards", "curves", "noise", "pose", "cross", "labels", "gallery", "provenance"):
        assert f'<section id="{section}">' in html
    boards = json.loads((out / "leaderboards.json").read_text())
    assert [(b["protocol"], b["test"]) for b in boards] == [
        ("synth_bp4d_3fold", "SynthAU bp4d"), ("synth_cross_dataset", "bp4d_to_disfa"),
        ("synth_cross_dataset", "disfa_to_bp4d"), ("synth_pose", "SynthAU bp4d")]  # directions never averaged
    bp4d = boards[0]
    assert [row["method"] for row in bp4d["rows"]] == ["wce", "aunce"] and bp4d["rows"][0]["runs"] == 6
    interval = bp4d["rows"][1]["difference_to_best"]
    assert interval["pairs"] == 6 and interval["high"] < 0 and interval["significant"]
    assert html.count('<img class="gallery"') == 2  # bp4d and disfa
    outside_curves = html.replace(section_of(html, "curves"), "")
    assert outside_curves.count("<svg") == 4 + 1 + 1 + 2  # per-AU bars, noise curve, pose heatmaps, phi heatmaps
    assert "not available" in html  # bp4d_to_disfa: no k-fold disfa run stored
    provenance = section_of(html, "provenance")
    runs = ResultStore(db).runs()
    assert all(provenance.count(f"<code>{run['run_id']}</code>") == 1 for run in runs)  # each run is one row
    assert provenance.count('<details class="config"') == 2 + 3 + 2 + 3  # 2 methods; setups: folds, directions


def test_reported_rows_are_labelled_and_never_ranked(synthetic):
    _, out = synthetic
    board = board_of(out, "synth_bp4d_3fold")
    assert board["reference_dataset"] == "bp4d" and not board["same_setting"]
    reported = {(r["method"], r["source"]): r for r in board["reported"]}
    assert ("aunce", "AUNCE, 3-fold logs of the released code") in reported
    assert ("wce", "ME-GraphAU Swin-B") in reported
    assert reported[("wce", "ME-GraphAU Swin-B")]["mean_f1"] == pytest.approx(0.655)
    assert all(r["measured_minus_reported"] is None for r in board["reported"])  # not the paper's setting
    assert {row["method"] for row in board["rows"]} == {"wce", "aunce"}  # ranked rows are measured only
    html = (out / "index.html").read_text()
    table = html[html.index('id="board-1"'):html.index('id="board-2"')]
    fixed = table[table.index('<tbody class="fixed">'):]
    assert fixed.count('<span class="tag reported">reported</span>') == len(board["reported"])
    assert "ME-GraphAU Swin-B (bp4d)" in fixed and fixed.count("not ranked") == len(board["reported"]) + 1
    assert 'class="best"' not in fixed and "reported" not in table[:table.index('<tbody class="fixed">')]
    assert board_of(out, "synth_cross_dataset")["reported"] == []  # no reference dataset


def test_same_setting_protocols_show_measured_minus_reported(synthetic, monkeypatch):
    db, _ = synthetic
    paper_setting = PaperReference(dataset="bp4d", same_setting=True)
    monkeypatch.setattr(aggregate, "_paper_reference", lambda protocol: paper_setting)
    with ResultStore(db) as store:
        board = leaderboards(store.runs(), store, resamples=100)[0]
    wce = next(row for row in board.rows if row.method == "wce")
    reported = next(r for r in board.reported if r.method == "wce")
    assert reported.difference == pytest.approx(wce.f1.mean - 0.655)


def test_chance_row_is_the_all_positive_predictor(synthetic):
    db, out = synthetic
    board = board_of(out, "synth_bp4d_3fold")
    runs = [r for r in ResultStore(db).runs() if r["protocol"] == "synth_bp4d_3fold" and r["noise"] == "none"]
    per_fold = {r["spec"]["fold_name"]: r for r in runs}  # one run per test fold
    assert board["chance"]["mean_f1"] == pytest.approx(np.mean([r["chance_f1"] for r in per_fold.values()]))
    with ResultStore(db) as store:
        labels = [store.predictions(r["run_id"]).column("label_AU12").to_numpy() for r in per_fold.values()]
    rates = [np.mean(fold[fold != -1] == 1) for fold in labels]
    assert board["chance"]["per_au_f1"]["AU12"] == pytest.approx(np.mean([2 * p / (1 + p) for p in rates]))
    html = (out / "index.html").read_text()
    assert html.count("all-positive predictor") == 4 + 1  # a labelled chance row per leaderboard and noise table


def _board(*values):
    """A one-AU leaderboard whose measured rows score `values` (mean and AU1 alike)."""
    rows = [aggregate.MethodRow(f"m{i}", "strict", [], aggregate.Stat(v, None, 1), {"AU1": v}) for i, v in enumerate(values)]
    return aggregate.Leaderboard(aggregate.Setting("p", "quick", "t", False), ["AU1"], 0.5, rows, {"AU1": None, "mean": None})


def test_best_is_marked_only_where_a_value_beats_another():
    assert _board(0.0, 0.0, 0.0).best("AU1") is None  # every method at 0: no best
    assert _board(0.4, 0.4).best("mean") is None and _board(0.7).best("AU1") is None
    assert _board(0.5, 0.5, 0.2).best("AU1") == 0.5 and _board(0.0, None, 0.1).best("AU1") == 0.1
    leaderboard = build.environment().get_template("macros.html.j2").module.leaderboard
    assert 'class="best"' not in str(leaderboard(_board(0.0, 0.0), 1000))
    assert str(leaderboard(_board(0.5, 0.5, 0.2), 1000)).count('class="best"') == 2 * 2  # tied rows, mean and AU1


def _weighted_f1(frame_weights, label, predicted):
    """F1 over frames counted `frame_weights` [B, N] times each, frames with a missing label left out: [B]."""
    tp, fp, fn = (frame_weights @ hit.astype(float) for hit in
                  (predicted & (label == 1), predicted & (label == 0), ~predicted & (label == 1)))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def test_per_au_differences_equal_an_independent_frame_level_bootstrap(hand_made):
    """blind_au4 - wce per AU: AU4's interval is below 0, AU1's (one missed hit) touches 0, the others are 0; each
    difference and interval is recomputed from the stored frames, resampling subjects as documented."""
    db, out = hand_made
    resamples = 200
    with ResultStore(db) as store:
        runs = store.runs()
        [board] = leaderboards(runs, store, resamples=resamples)
        tables = {(run["method"], run["spec"]["fold_name"]): store.predictions(run["run_id"]) for run in runs}
    best, blind = board.rows[0], next(row for row in board.rows if row.method == "blind_au4")
    assert best.method == "wce" and blind.significance.pairs == 3
    subjects = {run["spec"]["fold_name"]: sorted(run["spec"]["test_subjects"]) for run in runs}
    draw = np.random.default_rng(0)  # fold by fold in name order, one multinomial over the sorted subjects each
    differences, observed = np.zeros((resamples, len(board.aus))), np.zeros(len(board.aus))
    for fold in sorted(subjects):
        n = len(subjects[fold])
        weights = draw.multinomial(n, np.full(n, 1 / n), size=resamples)
        for method, sign in (("blind_au4", 1), ("wce", -1)):
            table = tables[method, fold]
            frames = [subjects[fold].index(subject) for subject in table.column("subject").to_pylist()]
            for k, au in enumerate(board.aus):
                label = table.column(f"label_{au}").to_numpy()
                predicted = table.column(f"prob_{au}").to_numpy() >= board.decision_threshold
                differences[:, k] += sign * _weighted_f1(weights[:, frames], label, predicted) / len(subjects)
                observed[k] += sign * _weighted_f1(np.ones((1, len(frames))), label, predicted)[0] / len(subjects)
    per_au = dict(zip(board.aus, blind.significance.per_au))
    for k, au in enumerate(board.aus):
        low, high = np.percentile(differences[:, k], [2.5, 97.5])
        assert per_au[au].difference == pytest.approx(observed[k], abs=1e-12)
        assert per_au[au].difference == pytest.approx(blind.per_au[au] - best.per_au[au], abs=1e-12)  # stored F1
        assert (per_au[au].low, per_au[au].high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    low, high = np.percentile(differences.mean(axis=1), [2.5, 97.5])  # the mean F1's, from the same resamples
    assert (blind.significance.low, blind.significance.high) == (pytest.approx(low, abs=1e-12),
                                                                 pytest.approx(high, abs=1e-12))
    assert per_au["AU4"].high < 0 and per_au["AU4"].significant
    assert per_au["AU1"].low < per_au["AU1"].high == 0 and not per_au["AU1"].significant
    assert all((i.difference, i.low, i.high) == (0, 0, 0) for au, i in per_au.items() if au not in ("AU1", "AU4"))

    # the page: blind_au4's row marks the mean and AU4, coloured red; equal AUs stay white
    html = (out / "index.html").read_text()
    view = html[html.index('id="differences-board-1"'):]
    view = view[:view.index("</table>")]
    assert "Where methods differ: synth_bp4d_3fold" in view and "test: SynthAU bp4d (data " in view
    row = next(row for row in view.split("<tr>") if row.strip().startswith('<td class="text">blind_au4'))
    cells = re.findall(r'<td style="background-color: rgb\((\d+), (\d+), (\d+)\)"( class="excludes-zero")? '
                       r'title="([^:]+):', row)
    assert [column for *_, column in cells] == ["mean F1", *board.aus]
    assert [column for *_, marked, column in cells if marked] == ["mean F1", "AU4"]
    colours = {column: tuple(map(int, rgb)) for *rgb, _, column in cells}
    assert colours["AU4"][0] > colours["AU4"][2] + 50 and colours["AU2"] == (255, 255, 255)
    [exported] = [r for r in board_of(out, "synth_bp4d_3fold")["rows"] if r["method"] == "blind_au4"]
    assert exported["difference_to_best"]["per_au"]["AU4"]["difference"] == pytest.approx(per_au["AU4"].difference)
    header, *lines = [line.split(",") for line in (out / "leaderboards.csv").read_text().splitlines()]
    [csv_row] = [line for line in lines if line[header.index("method")] == "blind_au4"
                 and line[header.index("kind")] == "measured"]
    assert csv_row[header.index("difference_to_best_AU4")] == f"{per_au['AU4'].difference:.4f}"


def test_rows_below_chance_are_tagged(hand_made):
    _, out = hand_made
    html = (out / "index.html").read_text()
    measured = html[html.index('<tbody class="measured">'):html.index('<tbody class="fixed">')]
    tagged = [row for row in measured.split("<tr")[1:] if 'class="tag below-chance"' in row]
    assert len(tagged) == 1 and 'data-v="silent"' in tagged[0] and 'title="mean F1 0.0 is below chance' in tagged[0]
    leaderboard = build.environment().get_template("macros.html.j2").module.leaderboard
    for means, tagged in (((0.1, 0.3), ["m0"]), ((0.3, 0.25), []), ((0.1,), ["m0"])):  # the last: ranked first
        board = _board(*means)
        board.rows, board.chance["mean"] = aggregate._rank(board.rows), 0.2
        rendered = str(leaderboard(board, 1000))
        rows = [row for row in rendered.split("<tr") if 'data-v="m' in row]
        assert [re.search(r'data-v="(m\d)"', row)[1] for row in rows if "below chance</span>" in row] == tagged
        assert rendered.count('title="mean F1 10.0 is below chance (20.0: every AU predicted present') == len(tagged)


def test_noise_pose_and_cross_aggregates(synthetic):
    db, _ = synthetic
    runs = ResultStore(db).runs()
    [curve] = aggregate.noise_curves(runs)
    assert (curve.setting.protocol, curve.kind, curve.levels) == ("synth_bp4d_3fold", "symmetric", [0.0, 0.2, 0.4])
    noisy = [r["mean_f1"] for r in runs if r["method"] == "wce" and r["noise"] == "symmetric:0.4"]
    assert curve.points["wce"][2].mean == pytest.approx(np.mean(noisy)) and curve.points["wce"][2].n == 3
    assert curve.drop("wce", 2) == pytest.approx(curve.points["wce"][0].mean - np.mean(noisy))
    [grid] = aggregate.pose_grids(runs)
    assert (grid.yaws, grid.pitches) == ([-40, -20, 0, 20, 40], [20, 0, -20])
    pose_runs = [r for r in runs if r["protocol"] == "synth_pose" and r["method"] == "aunce"]
    expected = np.mean([np.mean(list(r["groups"]["pose:yaw-40_pitch+20"].values())) for r in pose_runs])
    assert grid.methods["aunce"][0, 0] == pytest.approx(expected)
    cross = {(row.setting.test, row.method): row for row in aggregate.cross_dataset(runs)}
    assert cross[("bp4d_to_disfa", "wce")].in_domain is None
    to_bp4d = cross[("disfa_to_bp4d", "wce")]
    assert to_bp4d.in_domain_protocol == "synth_bp4d_3fold" and to_bp4d.aus == ["AU1", "AU2", "AU4", "AU6", "AU12"]
    in_domain = [np.mean([r["per_au_f1"][au] for au in to_bp4d.aus]) for r in runs
                 if r["protocol"] == "synth_bp4d_3fold" and r["method"] == "wce" and r["noise"] == "none"]
    assert to_bp4d.in_domain.mean == pytest.approx(np.mean(in_domain))
    assert to_bp4d.drop == pytest.approx(np.mean(in_domain) - to_bp4d.cross.mean)


def test_label_statistics_come_from_the_stored_test_labels(synthetic):
    db, _ = synthetic
    with ResultStore(db) as store:
        runs = store.runs()
        stats = {s.dataset: s for s in aggregate.label_stats(runs, store)}
        assert set(stats) == {"SynthAU bp4d", "SynthAU disfa"}
        bp4d = stats["SynthAU bp4d"]
        folds = {r["spec"]["fold_name"]: r["run_id"] for r in runs if r["protocol"] == "synth_bp4d_3fold"}
        labels = np.concatenate([store.predictions(folds[f]).column("label_AU1").to_numpy() for f in sorted(folds)])
    assert bp4d.source.startswith("synth_bp4d_3fold") and bp4d.subjects == 41
    assert bp4d.base_rates[0] == pytest.approx(np.mean(labels[labels != -1] == 1))
    assert np.allclose(np.diag(bp4d.phi), 1.0) and np.allclose(bp4d.phi, bp4d.phi.T, equal_nan=True)


def test_markup_in_names_is_escaped(evil):
    _, out = evil
    html = (out / "index.html").read_text()
    assert "alert(1)" in html and "<script>alert" not in html
    assert html.count("<script") == 2  # the page's own: the embedded data and the sort script
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;$x$" in html
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;$x$" in section_of(html, "curves")  # the run curves and legend
    data = html[html.index('<script type="application/json"'):]
    data = data[data.index(">") + 1:data.index("</script>")]
    assert "</" not in data and json.loads(data)[0]["rows"][0]["method"] == EVIL
    assert "alert(2)" in html and "</script><script>alert(2)" not in html
    markdown = (out / "leaderboards.md").read_text()  # the Markdown export neutralises markup
    assert "<script>" not in markdown and "evil&lt;script&gt;alert(1)&lt;/script&gt;$x$" in markdown


def test_a_name_no_font_draws_is_written_escaped_without_glyph_warnings(tmp_path, monkeypatch):
    from matplotlib import font_manager

    from aunce_bench.report import plots

    assert plots._fonts()[0][0] == "DejaVu Sans"
    dejavu = frozenset(font_manager.get_font(font_manager.findfont("DejaVu Sans")).get_charmap())
    monkeypatch.setattr(plots, "_fonts", lambda: (("DejaVu Sans",), dejavu))  # as where no CJK font is installed
    rows = [aggregate.MethodRow(name, "strict", [], aggregate.Stat(0.6, None, 1), {"AU1": 0.6})
            for name in ("日本語", "wce")]
    board = aggregate.Leaderboard(aggregate.Setting("p", "quick", "t", False), ["AU1"], 0.5, rows,
                                  {"AU1": 0.3, "mean": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" per character and draw
        figure = plots.per_au_bars(board, plots.method_colours(["日本語", "wce"]))
        svg = plots.svg(figure)
        png = plots.save_png(figure, tmp_path / "bars.png")
    assert ">\\u65e5\\u672c\\u8a9e</text>" in svg and "日" not in svg
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("case", ["missing", "no done runs"])
def test_report_refuses_a_missing_or_empty_database(case, tmp_path):
    db = tmp_path / "results.sqlite"
    if case == "no done runs":
        with ResultStore(db) as store:
            [run] = synthetic_runs("wce", "synth_bp4d_3fold")[:1]
            store.start_run(run.run_id, method="wce", protocol="p", dataset="bp4d", budget="quick", fold=1, seed=0,
                            noise="none", spec=run.model_dump(mode="json"), provenance={})
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and str(db) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "out" / "index.html").exists()


def test_report_without_the_predictions_folder_says_so_in_one_line(synthetic, tmp_path):
    db, _ = synthetic
    shutil.copy(db, tmp_path / "copied.sqlite")  # the database alone, without copied.predictions/
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "copied.sqlite"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no predictions for run" in result.stderr
    assert "copied.predictions" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_report_refuses_an_unwritable_output_folder(synthetic, tmp_path):
    db, _ = synthetic
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(blocker / "reports")])
    assert result.exit_code == 2 and "cannot write to" in result.stderr and str(blocker) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--noise-type", "gaussian"], "invalid --noise-type: unknown noise model 'gaussian'; known: asymmetric, "
                                       "boundary, missing_positive, symmetric, weak_intensity"),
        (["--levels", "0,1.0"], "invalid --levels: rate 1 is outside [0, 1)"),
        (["--levels", "-0.1"], "invalid --levels: rate -0.1 is outside [0, 1)"),
        (["--levels", "a,b"], "invalid --levels"),
        (["--levels", "0"], "give at least one rate above 0"),
        (["--methods", "wce,aunc"], "unknown method 'aunc' (did you mean 'aunce'?)"),
        (["--protocol", "synth_bp4d"], "unknown protocol 'synth_bp4d'"),
    ],
)
def test_noise_curve_rejects_bad_input_with_one_line(arguments, message, tmp_path):
    options = {"--methods": "wce", "--protocol": "synth_bp4d_3fold", "--noise-type": "symmetric", "--levels": "0,0.2"}
    options.update(dict(zip(arguments[::2], arguments[1::2])))
    result = runner.invoke(app, ["noise-curve", *[x for pair in options.items() for x in pair], "--quick",
                                 "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.sqlite").exists()


def test_results_leaderboard_formats(synthetic):
    db, out = synthetic
    markdown = runner.invoke(app, ["results", "--db", str(db), "--leaderboard", "--format", "md"]).output
    assert markdown.count("## ") == 4 and "| kind | rank | method |" in markdown
    assert markdown.strip() == (out / "leaderboards.md").read_text().strip()
    filtered = invoke_json("results", "--db", str(db), "--leaderboard", "--protocol", "synth_pose")
    assert [b["protocol"] for b in filtered] == ["synth_pose"]
    plain = invoke_json("results", "--db", str(db), "--protocol", "synth_pose")
    assert {"run_id", "mean_f1", "per_au_f1", "chance_f1", "wall_s"} <= set(plain[0])  # per-run schema unchanged


# ------------------------------------------------------------------------------------ training curves
def _entries(stage, losses, val_f1s):
    return [{"stage": stage, "epoch": epoch, "loss": loss, "lr": 1e-3, "val_f1": val, "images_per_s": 10.0}
            for epoch, (loss, val) in enumerate(zip(losses, val_f1s), start=1)]


def test_training_curves_are_the_mean_and_range_of_each_methods_runs():
    """2 methods x 3 folds: each curve is numpy's mean, min and max over the runs, at the epochs they all reached."""
    rng = np.random.default_rng(0)
    shared = _entries("init pretraining (SynthFace)", [2.0, 1.5], [None, None])  # the same for every run
    sup_loss, sup_val = rng.random((3, 5)), rng.random((3, 5))
    sup_val[1, 2] = np.nan  # a run without a value at epoch 3
    con_loss, probe_loss, probe_val = rng.random((3, 3)), rng.random((3, 4)), rng.random((3, 4))
    lengths = [5, 5, 4]  # fold 3 of method a stopped after 4 epochs
    runs = {}
    for fold in range(3):
        n = lengths[fold]
        runs[f"a{fold}"] = shared + _entries("supervised", sup_loss[fold, :n],
                                             [None if np.isnan(v) else v for v in sup_val[fold, :n]])
        runs[f"b{fold}"] = (shared + _entries("contrastive pretraining", con_loss[fold], [None] * 3)
                            + _entries("linear probe", probe_loss[fold], probe_val[fold]))
    runs["b_old"] = []  # stored before histories were
    by_id = {run_id: {"run_id": run_id, "history": history} for run_id, history in runs.items()}
    rows = [aggregate.MethodRow(method, "strict", [rid for rid in runs if rid.startswith(method)],
                                aggregate.Stat(0.5, None, 3), {}) for method in ("a", "b")]
    board = aggregate.Leaderboard(aggregate.Setting("p", "quick", "t", False), [], 0.5, rows, {"mean": None})

    result = curves.board_curves(board, by_id)
    assert [stage.stage for stage in result.stages] == [
        "init pretraining (SynthFace)", "contrastive pretraining", "supervised", "linear probe"]
    assert (result.runs, result.without_history, result.dropped) == (7, 1, 1)
    init, contrastive, supervised, probe = result.stages
    [shared_curve] = init.curves  # drawn once, over all six runs
    assert init.shared and shared_curve.runs == 6 and shared_curve.val_f1 is None
    assert np.array_equal(shared_curve.loss.mean, [2.0, 1.5]) and np.array_equal(shared_curve.loss.low, [2.0, 1.5])

    [a] = supervised.curves
    assert (a.label, a.runs, a.dropped) == ("a", 3, 1) and np.array_equal(a.epochs, [1, 2, 3, 4])
    for band, values in ((a.loss, sup_loss[:, :4]), (a.val_f1, sup_val[:, :4])):
        assert np.allclose(band.mean, np.nanmean(values, axis=0))
        assert np.allclose(band.low, np.nanmin(values, axis=0)) and np.allclose(band.high, np.nanmax(values, axis=0))
    [b] = probe.curves
    assert (b.label, b.runs, b.dropped) == ("b", 3, 0) and np.array_equal(b.epochs, [1, 2, 3, 4])
    assert np.allclose(b.loss.mean, probe_loss.mean(axis=0)) and np.allclose(b.val_f1.high, probe_val.max(axis=0))
    assert np.allclose(b.val_f1.low, probe_val.min(axis=0))
    [b_contrastive] = contrastive.curves
    assert b_contrastive.val_f1 is None and not contrastive.has_val and probe.has_val
    assert np.allclose(b_contrastive.loss.mean, con_loss.mean(axis=0))

    # a run's own curves: its stages but the shared pretraining, each a polyline between its min and max
    own = curves.run_curves(by_id["b1"])
    assert [stage.stage for stage in own] == ["contrastive pretraining", "linear probe"]
    spark = own[1].val_f1
    assert (spark.low, spark.high, spark.last) == (probe_val[1].min(), probe_val[1].max(), probe_val[1][-1])
    points = [tuple(map(int, point.split(","))) for point in spark.points.split()]
    assert len(points) == 4 and points[0][0] == 0 and points[-1][0] == curves.SPARK_BOX[0]
    assert min(y for _, y in points) == 0 and max(y for _, y in points) == curves.SPARK_BOX[1]
    assert own[0].val_f1 is None and curves.run_curves(by_id["b_old"]) == []
    long = curves.run_curves({"history": _entries("supervised", np.linspace(2, 1, 200), [None] * 200)})
    assert len(long[0].loss.points.split()) <= curves.SPARK_POINTS


def test_training_curves_section_links_every_run_to_its_curves(synthetic):
    db, out = synthetic
    html = (out / "index.html").read_text()
    section, provenance = section_of(html, "curves"), section_of(html, "provenance")
    boards = json.loads((out / "leaderboards.json").read_text())
    for index in range(1, len(boards) + 1):
        assert f'id="curves-board-{index}"' in section and f'href="#curves-board-{index}"' in html
    figures = re.findall(r'<figure class="curves">(.*?)</figure>', section, re.S)
    assert len(figures) == 2 and all(figure.startswith("<svg") for figure in figures)  # bp4d 3-fold and pose
    assert all("band: min–max over runs" in figure and "shared by all rows" in figure for figure in figures)
    assert "init pretraining (SynthFace)" in figures[0] and "linear probe" in figures[0]
    assert "10 epoch(s) reached by only some runs of a method are left out" in section  # RAGGED's probe
    # the cross-dataset runs were stored without histories, as before they were recorded
    assert section.count("No training curves are stored for the runs of this leaderboard (stored before") == 2
    runs = [run for run in ResultStore(db).runs() if run["status"] == "done"]
    for run in runs:
        run_id = run["run_id"]
        if run["protocol"] == "synth_cross_dataset":
            assert run["history"] == [] and f"#curves-{run_id}" not in html and f'id="curves-{run_id}"' not in html
        else:
            assert provenance.count(f'href="#curves-{run_id}"') == 1 and section.count(f'id="curves-{run_id}"') == 1
    assert provenance.count(">none stored</span>") == sum(run["protocol"] == "synth_cross_dataset" for run in runs)
    other = section[section.index('id="curves-other"'):]  # the noisy runs, on no leaderboard
    assert other.count('<tbody id="curves-') == sum(run["noise"] != "none" for run in runs)
    ragged = next(run for run in runs if (run["method"], run["protocol"], run["fold"], run["seed"], run["noise"])
                  == RAGGED)
    rows = section[section.index(f'id="curves-{ragged["run_id"]}"'):]
    rows = rows[:rows.index("</tbody>")]
    assert rows.count("<svg") == 2 + 1 and "<td>linear probe</td><td>30</td>" in rows  # no val F1 in pretraining


def test_a_store_without_histories_renders_with_one_line_instead_of_curves(tmp_path):
    db = tmp_path / "results.sqlite"
    with ResultStore(db) as store:
        for run in synthetic_runs("wce", "synth_bp4d_3fold"):
            store_synthetic_run(store, run, 2.0, history=False)  # as stored before histories were recorded
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report" / "index.html").read_text()
    section = section_of(html, "curves")
    assert "No training curves are stored: these runs were stored before per-epoch histories" in section
    assert "<svg" not in section and "curves-" not in html.replace('id="curves"', "").replace('href="#curves"', "")
    assert section_of(html, "provenance").count(">none stored</span>") == 3


# -------------------------------------------------------------------------------------------- browser
def _column(table, header: str) -> list[str]:
    """The sort keys (data-v) of a column of the measured rows, top to bottom."""
    index = table.locator("thead th").all_inner_texts().index(header)
    return [row.locator("td").nth(index).get_attribute("data-v") for row in table.locator("tbody.measured tr").all()]


def _sort_by(table, header: str):
    """Click a column's header button; returns the header cell."""
    th = table.locator("thead th").nth(table.locator("thead th").all_inner_texts().index(header))
    th.locator("button").click()
    return th


def test_report_in_a_real_browser(synthetic, page_of, tmp_path):
    _, out = synthetic
    index = out / "index.html"
    page, requests, dialogs = page_of(index)
    artifacts = Path(os.environ.get("AUNCE_BENCH_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report_screenshot.png"
    page.screenshot(path=str(screenshot))
    print(f"report screenshot: {screenshot}")
    assert screenshot.stat().st_size > 20_000

    table = page.locator("table.board").first
    board = board_of(out, "synth_bp4d_3fold")
    assert _column(table, "method") == [row["method"] for row in board["rows"]]  # by rank
    header = _sort_by(table, "AU2")
    by_au2 = sorted(board["rows"], key=lambda row: -row["per_au_f1"]["AU2"])
    assert _column(table, "method") == [row["method"] for row in by_au2]
    values = [float(v) for v in _column(table, "AU2")]
    assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
    _sort_by(table, "AU2")
    assert _column(table, "method") == [row["method"] for row in reversed(by_au2)]
    _sort_by(table, "method")
    assert _column(table, "method") == sorted(row["method"] for row in board["rows"])
    assert table.locator("tbody.fixed tr").count() == 1 + len(board["reported"])  # chance and reported stay put

    # where methods differ: one row per ranked method but the best, cells coloured by sign, a screenshot of it
    view = page.locator("#differences-board-1")
    differences = view.locator("table.differences")
    assert differences.locator("tbody tr").count() == sum(1 for row in board["rows"] if row["rank"]) - 1
    assert differences.locator("thead th").all_inner_texts() == ["method", "mean F1", *board["aus"]]
    marked = differences.locator("td.excludes-zero")  # aunce is worse than wce overall: red
    assert marked.count() >= 1 and marked.first.evaluate("c => getComputedStyle(c).fontWeight") == "700"
    red, green, blue = map(int, re.findall(r"\d+", marked.first.evaluate("c => getComputedStyle(c).backgroundColor")))
    assert red > blue + 30 and (red, green, blue) != (255, 255, 255)
    view_screenshot = artifacts / "per_au_view.png"
    view.screenshot(path=str(view_screenshot), style="nav.toc { position: static; }")
    print(f"per-AU differences screenshot: {view_screenshot}")
    assert view_screenshot.stat().st_size > 10_000

    protocol = page.locator("#provenance details.group").nth(1)  # the first protocol's (0: method configurations)
    assert not protocol.locator("table.runs").first.is_visible()  # collapsed
    protocol.locator("summary").first.click()
    assert protocol.locator("table.runs tbody tr").first.is_visible()
    assert page.locator("svg").count() >= 8 and page.locator("img.gallery").first.evaluate("i => i.naturalWidth") > 0
    assert requests and all(url == index.as_uri() or url.startswith("data:") for url in requests), requests
    assert dialogs == []


def test_training_curves_in_a_real_browser(synthetic, page_of, tmp_path):
    """The curves section is visible where the contents bar leads, a provenance row's link opens its run's
    curves, and a screenshot of the section is saved (to $AUNCE_BENCH_SCREENSHOTS when set)."""
    _, out = synthetic
    page, requests, dialogs = page_of(out / "index.html")
    page.locator("nav.toc a[href='#curves']").click()
    section = page.locator("#curves")
    assert section.is_visible() and section.locator("figure.curves svg").first.is_visible()
    assert section.locator("figure.curves svg").first.bounding_box()["height"] > 150

    protocol = page.locator("#provenance details.group").nth(1)  # collapsed, as the run curves are
    protocol.locator("summary").first.click()
    link = protocol.locator("a.curves-link").first
    target = link.get_attribute("href")
    assert not page.locator(target).is_visible()
    link.click()
    curves_of_run = page.locator(target)
    curves_of_run.locator("svg").first.wait_for(state="visible")
    assert page.evaluate("location.hash") == target and curves_of_run.locator("svg").count() >= 2
    assert curves_of_run.evaluate("b => b.closest('details').open")
    box = curves_of_run.bounding_box()
    assert 0 <= box["y"] < page.viewport_size["height"]  # scrolled to it
    folder = Path(os.environ.get("AUNCE_BENCH_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    screenshot = folder / "report_curves.png"
    # the figures, and the run's curves opened and highlighted; the sticky contents bar would cover part of it
    section.screenshot(path=str(screenshot), style="nav.toc { position: static; }")
    print(f"training curves screenshot: {screenshot}")
    assert screenshot.stat().st_size > 20_000
    assert all(url == (out / "index.html").as_uri() or url.startswith("data:") for url in requests)
    assert dialogs == []


def test_markup_in_names_stays_inert_in_a_real_browser(evil, page_of):
    _, out = evil
    page, requests, dialogs = page_of(out / "index.html")
    page.wait_for_timeout(200)
    assert dialogs == []
    cell = page.locator("table.board tbody.measured tr").first.locator("td").nth(1)
    assert cell.inner_text() == EVIL
    data = json.loads(page.locator("#leaderboard-data").text_content())
    assert data[0]["rows"][0]["method"] == EVIL


def test_ablations_and_sweep_points_are_listed_under_their_method_and_carry_their_family():
    def row(method, mean, family, parent=None, selection="strict"):
        return aggregate.MethodRow(method, selection, [method], aggregate.Stat(mean, None, 1), {}, family=family,
                                   parent=parent)

    rows = aggregate._rank([row("wce", 0.62, "supervised"), row("aunce", 0.50, "contrastive"),
                            row("aunce_maxpos", 0.55, "ablation", "aunce"), row("gce", 0.56, "noise-robust"),
                            row("aunce[temperature=0.1]", 0.40, "sweep", "aunce"),
                            row("x_ablation", 0.70, "ablation", "not_on_this_board"),
                            row("wce", 0.63, "supervised", selection="test_fold")])
    board = aggregate.Leaderboard(aggregate.Setting("p", "quick", "t", False, "scratch", 0.5, 2.0, "none"),
                                  [], 0.5, rows, {"mean": None})
    assert [(r.method, r.rank) for r in board.grouped_rows] == [
        ("x_ablation", 1), ("wce", 2), ("gce", 3), ("aunce", 5), ("aunce_maxpos", 4), ("aunce[temperature=0.1]", 6),
        ("wce", 0)]
    assert board.families == ["supervised", "noise-robust", "contrastive", "ablation", "sweep"]
    csv_rows = exports.board_rows(board)
    assert [r["family"] for r in csv_rows[:3]] == ["ablation of not_on_this_board", "supervised", "noise-robust"]


class _TableShapes(HTMLParser):
    """Per <table>: the number of columns each row fills (colspan counted, and the cells of rows above that
    reach down into it through rowspan), header rows first."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[int]] = []
        self._open: list[tuple[list[int], list[list[int]]]] = []  # (row widths, [rows left, width] spanning down)

    def handle_starttag(self, tag, attrs):
        if not self._open and tag != "table":
            return
        if tag == "table":
            self._open.append(([], []))
        elif tag == "tr":
            widths, spans = self._open[-1]
            widths.append(sum(width for _, width in spans))
            spans[:] = [[left - 1, width] for left, width in spans if left > 1]
        elif tag in ("td", "th"):
            widths, spans = self._open[-1]
            width, rowspan = int(dict(attrs).get("colspan") or 1), int(dict(attrs).get("rowspan") or 1)
            widths[-1] += width
            if rowspan > 1:
                spans.append([rowspan - 1, width])

    def handle_endtag(self, tag):
        if tag == "table":
            self.tables.append(self._open.pop()[0])


def table_shapes(html: str) -> list[list[int]]:
    parser = _TableShapes()
    parser.feed(html)
    return parser.tables


def test_every_row_of_every_table_has_the_headers_cells(synthetic, tiny):
    """A row with a cell too many or too few shifts every value after it under the wrong header."""
    pages = [synthetic[1] / "index.html", *(tiny[2] / "curves").glob("*.html")]
    checked = 0
    for page in pages:
        for rows in table_shapes(page.read_text()):
            assert rows and all(cells == rows[0] for cells in rows), f"{page.name}: row widths {rows}"
            checked += len(rows)
    assert checked > 50


def test_the_noise_tables_chance_row_sits_under_its_levels(tiny):
    """The chance value is under "clean" and each noise level; the drop columns stay empty."""
    html = next((tiny[2] / "curves").glob("*.html")).read_text()
    row = re.search(r'<tr class="chance">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    chance = ResultStore(tiny[0]).runs()[0]["chance_f1"]
    assert cells[1:] == [f"{100 * chance:.1f}"] * 2 + [""]  # clean, 0.2, drop at 0.2
