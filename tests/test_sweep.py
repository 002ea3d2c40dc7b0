"""`aunce-bench sweep`: parsing --param, sweep points as ordinary methods, the sensitivity aggregation, and an
end-to-end sweep on the tiny protocol (one-epoch tiny_wce over two learning rates) with its report section."""

import itertools
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.protocols import plan_runs
from aunce_bench.report.sensitivity import BOOTSTRAP, STD, sensitivities
from aunce_bench.results import ResultStore
from aunce_bench.specs import load_method, load_protocol
from aunce_bench.sweep import grid_points, parse_params, point_name, random_points, sweep_methods

runner = CliRunner()
CLEAN = NoiseSpec.parse("none")


# ------------------------------------------------------------------------------------------- parsing
def test_the_grid_is_every_combination_of_the_lists():
    params = parse_params(["loss.temperature=0.05,0.1,0.2,0.5,1.0", "loss.exponent_neg=0.5,0.8,1.0"], random=False)
    assert [param.path for param in params] == ["loss.exponent_neg", "loss.temperature"]  # path order
    points = grid_points(params)
    assert len(points) == 15
    assert [tuple(point.values()) for point in points] == list(itertools.product((0.5, 0.8, 1.0),
                                                                                   (0.05, 0.1, 0.2, 0.5, 1.0)))


def test_values_are_read_as_yaml_scalars():
    [param] = parse_params(["x.y=3,0.5,1e-3,-2,true,off,cosine,checkpoint:/a.pt"], random=False)
    assert param.values == (3, 0.5, 0.001, -2, True, False, "cosine", "checkpoint:/a.pt")
    assert [type(value) for value in param.values[:5]] == [int, float, float, int, bool]


def test_random_draws_are_reproducible_and_inside_their_ranges():
    options = ["loss.temperature=0.05:1.0:log", "train.lr=0.001:0.002", "train.epochs=1:5",
               "train.schedule=constant,cosine"]
    params = parse_params(options, random=True)
    points = random_points(params, 200, seed=7)
    assert points == random_points(params, 200, seed=7) and points != random_points(params, 200, seed=8)
    temperatures = np.array([point["loss.temperature"] for point in points])
    assert all(0.05 <= t <= 1.0 and float(f"{t:.4g}") == t for t in temperatures)  # 4 significant digits
    assert 0.35 < np.mean(temperatures < np.sqrt(0.05 * 1.0)) < 0.65  # log-uniform: half below the geometric middle
    assert all(0.001 <= point["train.lr"] <= 0.002 for point in points)
    assert {point["train.epochs"] for point in points} == {1, 2, 3, 4, 5}  # integer bounds: whole numbers
    assert {point["train.schedule"] for point in points} == {"constant", "cosine"}  # a list: a choice
    [fixed] = parse_params(["train.epochs=2,3"], random=True)
    assert len(random_points([fixed], 50, seed=0)) == 2  # repeated draws are one point


def test_point_names_use_the_last_path_component_unless_shared():
    assert point_name("aunce", {"loss.temperature": 0.1}) == "aunce[temperature=0.1]"
    assert (point_name("wce", {"model.graph": False, "probe.lr": 0.01, "train.lr": 1e-05})
            == "wce[graph=false,probe.lr=0.01,train.lr=1e-05]")


# ------------------------------------------------------------------------------------- sweep points
def _points(options, method="aunce", random=None):
    params = parse_params(options, random=random is not None)
    points = grid_points(params) if random is None else random_points(params, random, seed=0)
    return sweep_methods(load_method(method), load_protocol("synth_bp4d_3fold"), "quick", params, points)


def test_swept_values_beat_the_budget_and_each_point_is_its_own_run():
    points = _points(["train.epochs=3,5", "loss.temperature=0.5,1"])
    assert [point.name for point in points] == ["aunce[temperature=0.5,epochs=3]", "aunce[temperature=0.5,epochs=5]",
                                                "aunce[temperature=1.0,epochs=3]", "aunce[temperature=1.0,epochs=5]"]
    five = points[1]
    assert five.train.epochs == 5  # aunce's quick budget sets 3: the swept value wins
    assert five.loss.positive_probs == [0.0, 1.0, 0.0] and five.probe.epochs == 40  # the budget's other values stay
    assert points[2].loss.temperature == 1.0 and isinstance(points[2].loss.temperature, float)  # an int for a float
    assert five.family == "sweep" and five.reported == []
    assert five.sweep_of.method == "aunce" and five.sweep_of.params == {"loss.temperature": 0.5, "train.epochs": 5}

    protocol = load_protocol("synth_bp4d_3fold")
    ids = [run.run_id for point in points for run in plan_runs(point, protocol, "quick", [1], [0], CLEAN)]
    [base] = plan_runs(load_method("aunce"), protocol, "quick", [1], [0], CLEAN)
    assert len(set(ids)) == 4 and base.run_id not in ids  # point 0 has the base's values, yet its own id
    again = [run.run_id for point in _points(["loss.temperature=0.5,1", "train.epochs=3,5"])
             for run in plan_runs(point, protocol, "quick", [1], [0], CLEAN)]
    assert again == ids  # the same sweep, options in another order: the same runs, found done in the store


def test_random_points_are_methods_too():
    points = _points(["loss.temperature=0.05:1.0:log", "probe.epochs=10:40"], random=3)
    assert len(points) == 3 and all(point.family == "sweep" for point in points)
    assert all(10 <= point.probe.epochs <= 40 and point.name.startswith("aunce[temperature=") for point in points)


SWEEP = ["sweep", "--method", "aunce", "--protocol", "synth_bp4d_3fold", "--quick"]


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "invalid --param: give at least one parameter to sweep"),
    (["--param", "loss.temperature"], "invalid --param 'loss.temperature': expected PATH=VALUES"),
    (["--param", "loss.temprature=0.1"], "aunce has no parameter 'loss.temprature' (did you mean 'loss.temperature'?)"),
    (["--param", "trian.lr=0.1"], "(did you mean 'train.lr'?)"),
    (["--param", "loss.temperature=abc"], "value abc: loss.temperature takes a number (it is 0.5)"),
    (["--param", "loss.variant=1"], "value 1: loss.variant takes a word (it is official)"),
    (["--param", "train.lr=0.01,0"], "invalid --param train.lr=0.01,0: value 0: Input should be greater than 0"),
    (["--param", "train.epochs=1.5"], "value 1.5: Input should be a valid integer"),
    (["--param", "train.schedule=cosine,linear"], "value linear: Input should be 'constant' or 'cosine'"),
    (["--param", "loss.temperature="], "give at least one value"),
    (["--param", "loss.temperature=0.1,,0.2"], "an empty value in the list"),
    (["--param", "loss.temperature=0.1,0.10"], "the value 0.1 is listed twice"),
    (["--param", "loss.temperature=0.1", "--param", "loss.temperature=0.2"], "'loss.temperature' is given twice"),
    (["--param", "loss.temperature=[0.1]"], "'[0.1]' is not a single value"),
    (["--param", "loss.temperature=0.05:1.0"], "a range LOW:HIGH is for random sweeps; add --random N"),
    (["--random", "4", "--param", "loss.temperature=0:1:log"], "a log range needs a low bound above 0"),
    (["--random", "4", "--param", "loss.temperature=1:0.5"], "the range's low bound 1 must be below its high bound 0.5"),
    (["--random", "4", "--param", "loss.temperature=0.1:1:exp"], "unknown scale 'exp'"),
    (["--random", "0", "--param", "loss.temperature=0.1"], "invalid --random: 0; draw at least 1 point"),
    (["--sweep-seed", "3", "--param", "loss.temperature=0.1"], "invalid --sweep-seed"),
    (["--param", "model.init=scratch"], "the init is part of the setting"),
    (["--param", "loss.positive_probs=0.2"], "loss option 'positive_probs' does not take a single value"),
    (["--method", "aunc", "--param", "loss.temperature=0.1"], "unknown method 'aunc' (did you mean 'aunce'?)"),
])
def test_bad_input_is_one_line_naming_the_option(arguments, message, tmp_path):
    result = runner.invoke(app, [*SWEEP, *arguments, "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "r.sqlite").exists()


# ------------------------------------------------------------------------------------------ aggregation
def _stored(run, f1, status="done"):
    """A run as ResultStore.runs() returns it (the fields the aggregation reads)."""
    return {"run_id": run.run_id, "status": status, "method": run.method.name, "protocol": run.protocol,
            "budget": run.budget, "noise": str(run.noise), "fold": run.fold, "seed": run.seed,
            "mean_f1": f1 if status == "done" else None, "spec": run.model_dump(mode="json")}


def test_sensitivity_against_a_hand_computation():
    protocol = load_protocol("synth_bp4d_3fold")
    points = _points(["loss.temperature=0.1,0.5", "loss.exponent_neg=0.5,1.0"])
    f1 = {  # (exponent_neg, temperature) -> F1 of folds 1, 2, 3
        (0.5, 0.1): [0.40, 0.44, 0.42], (0.5, 0.5): [0.50, 0.52, 0.54],
        (1.0, 0.1): [0.30, 0.36, 0.33], (1.0, 0.5): [0.60, 0.61, 0.62],
    }
    runs = []
    for point in points:
        key = (point.loss.exponent_neg, point.loss.temperature)
        runs += [_stored(run, value) for run, value in zip(plan_runs(point, protocol, "quick", None, [0], CLEAN), f1[key])]
    base = load_method("aunce")
    runs += [_stored(run, value) for run, value in zip(plan_runs(base, protocol, "quick", [1, 2], [0, 1], CLEAN),
                                                       [0.45, 0.99, 0.47, 0.99])]  # seed 1: not a sweep run
    noisy = plan_runs(points[0], protocol, "quick", [1], [0], NoiseSpec.parse("symmetric:0.2"))[0]
    runs += [_stored(noisy, 0.2), _stored(plan_runs(points[1], protocol, "quick", [1], [1], CLEAN)[0], 0.0, "failed")]

    clean, other = sensitivities(runs)
    assert other.setting.noise == "symmetric:0.2" and other.points[0].f1.runs == 1  # never pooled across settings
    assert other.points[0].f1.kind is None and other.points[0].f1.interval_text() == "–"  # one run: no interval
    assert (clean.method, clean.params) == ("aunce", ["loss.exponent_neg", "loss.temperature"])
    point = next(p for p in clean.points if p.values == {"loss.exponent_neg": 1.0, "loss.temperature": 0.1})
    assert point.f1.mean == pytest.approx(0.33) and point.f1.runs == 3 and point.f1.kind == STD
    assert point.f1.high - point.f1.mean == pytest.approx(np.std([0.30, 0.36, 0.33], ddof=1))
    temperature = clean.marginals[1]
    assert temperature.path == "loss.temperature" and temperature.values == [0.1, 0.5]
    cold = temperature.f1[0]  # the mean over exponent_neg of the points' means
    assert cold.mean == pytest.approx(np.mean([np.mean(f1[0.5, 0.1]), np.mean(f1[1.0, 0.1])]))
    assert (cold.points, cold.runs, cold.kind) == (2, 6, STD)
    assert cold.high - cold.mean == pytest.approx(np.std(f1[0.5, 0.1] + f1[1.0, 0.1], ddof=1))
    assert clean.reference.mean == pytest.approx(np.mean([0.45, 0.47]))  # the base on the sweep's folds and seeds
    assert clean.reference_values == {"loss.exponent_neg": 0.8, "loss.temperature": 0.5}


def test_points_with_many_runs_get_a_bootstrap_interval():
    protocol = load_protocol("synth_bp4d_3fold")
    rng = np.random.default_rng(0)
    runs = [_stored(run, float(rng.normal(0.5, 0.05)))
            for point in _points(["loss.temperature=0.1,0.5"])
            for run in plan_runs(point, protocol, "quick", [1], list(range(12)), CLEAN)]
    [sweep] = sensitivities(runs)
    assert sweep.reference is None
    for point in sweep.points:
        values = [run["mean_f1"] for run in runs if run["method"] == point.name]
        estimate = point.f1
        assert estimate.kind == BOOTSTRAP and estimate.runs == 12 and estimate.mean == pytest.approx(np.mean(values))
        assert estimate.low < estimate.mean < estimate.high
        # an interval of the mean: narrower than mean ± std of the runs, wider than none
        assert 0.5 * np.std(values, ddof=1) < estimate.high - estimate.low < 2 * np.std(values, ddof=1)
        assert estimate.interval_text().endswith("(95% bootstrap)")


# ------------------------------------------------------------------------------------------ end to end
RATES = ("0.001", "0.004")


@pytest.fixture(scope="module")
def swept(tiny_specs, tmp_path_factory):
    """tiny_wce (one epoch) on tiny_easy fold 1, then a sweep over two learning rates, run twice, then the report.
    Returns (db, first sweep result, second sweep result, out folder)."""
    folder = tmp_path_factory.mktemp("sweep")
    method = folder / "tiny_wce.yaml"
    method.write_text((tiny_specs / "tiny_wce.yaml").read_text().replace("epochs: 12", "epochs: 1"))
    common = ["--protocol", str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1", "--db", str(folder / "r.sqlite")]
    sweep = ["sweep", "--method", str(method), "--param", f"train.lr={','.join(RATES)}", *common, "--out", str(folder)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUNCE_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        base = runner.invoke(app, ["run", "--method", str(method), *common])
        assert base.exit_code == 0, base.output
        first, second = runner.invoke(app, sweep), runner.invoke(app, sweep)
        report = runner.invoke(app, ["report", "--db", str(folder / "r.sqlite"), "--out", str(folder / "report")])
    assert first.exit_code == 0, first.output
    assert report.exit_code == 0, report.output
    return folder / "r.sqlite", first, second, folder


def test_sweep_runs_each_point_and_prints_the_table(swept):
    db, result, _, folder = swept
    runs = {run["method"]: run for run in ResultStore(db).runs()}
    assert set(runs) == {"tiny_wce", "tiny_wce[lr=0.001]", "tiny_wce[lr=0.004]"}
    assert all(run["status"] == "done" for run in runs.values()) and len({r["run_id"] for r in runs.values()}) == 3
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "mean F1 per train.lr (tiny_wce, tiny_easy · quick" in output
    for rate in RATES:
        f1 = runs[f"tiny_wce[lr={rate}]"]["mean_f1"]
        assert re.search(rf"│ {rate}\s+│\s+1 │\s+1 │\s+{f1:.3f} │ –", result.output)
        assert re.search(rf"│ tiny_wce\[lr={rate}\]\s+│ {rate}\s+│\s+1 │\s+{f1:.3f} │", result.output)
    assert f"base method tiny_wce: {runs['tiny_wce']['mean_f1']:.3f} over 1 run(s)" in output
    assert "2 done, 0 failed, 0 skipped of 2 run(s)" in output
    html = (folder / "sweep_tiny_easy_quick_tiny_wce.html").read_text()
    assert "<svg" in html and "tiny_wce[lr=0.004]" in html and "<th class=\"text\">train.lr</th>" in html
    assert (folder / "sweep_tiny_easy_quick_tiny_wce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_repeated_sweep_skips_the_done_points(swept):
    db, _, again, _ = swept
    assert again.exit_code == 0, again.output
    assert again.output.count("already done, skipping: tiny_wce[lr=") == 2
    assert "0 done, 0 failed, 2 skipped of 2 run(s)" in " ".join(again.output.split())
    assert len(ResultStore(db).runs()) == 3


def test_the_report_has_a_sensitivity_section(swept):
    db, _, _, folder = swept
    html = (folder / "report" / "index.html").read_text()
    assert '<a href="#sensitivity">Sensitivity</a>' in html
    section = html[html.index('<section id="sensitivity">'):]
    section = section[:section.index("</section>")]
    assert section.count("<svg") == 1 and "tiny_wce on tiny_easy" in section
    runs = {run["method"]: run for run in ResultStore(db).runs()}
    for rate in RATES:
        assert f'<td class="text">{rate}</td><td>1</td><td>1</td><td>{100 * runs[f"tiny_wce[lr={rate}]"]["mean_f1"]:.1f}</td>' in section
    assert f"Base method tiny_wce (train.lr = 0.002):\n{100 * runs['tiny_wce']['mean_f1']:.1f} over 1 run(s)" in section
