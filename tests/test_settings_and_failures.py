"""What keeps numbers honest: selection policies, the comparability key, failure isolation, redo, and bad specs
refused with one line before anything is stored."""

import pytest
from typer.testing import CliRunner

from aunce_bench import launch
from aunce_bench.api import load_results
from aunce_bench.cli import app
from aunce_bench.data.configs import PreparedConfig
from aunce_bench.report.aggregate import cross_dataset, label_stats, leaderboards, noise_curves, run_key
from aunce_bench.report.exports import format_leaderboards
from aunce_bench.results import ResultStore
from test_report import store_synthetic_run, synthetic_runs

runner = CliRunner()

SHORT_WCE = """\
name: short_wce
recipe: supervised
model: {backbone: resnet18, graph: false, dim: 16}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 2}
"""


@pytest.fixture
def short_wce(tmp_path):
    path = tmp_path / "short_wce.yaml"
    path.write_text(SHORT_WCE)
    return path


def _run(method, protocol, db, *extra):
    return runner.invoke(app, ["run", "--method", str(method), "--protocol", str(protocol), "--quick", "--db", str(db),
                               *extra])


# ------------------------------------------------------------------------------------------ the key
def _stored(**changes):
    spec = {"train_data": {"profile": "bp4d", "occurrence_threshold": 2.0},
            "test_data": {"profile": "bp4d", "occurrence_threshold": 2.0}, "fold_name": "fold1", "init_hash": None,
            "method": {"model": {"init": "scratch"}}, "decision_threshold": 0.5, "selection": "strict",
            "data_fingerprint": "0" * 20}
    run = {"protocol": "p", "budget": "quick", "method": "m", "noise": "none", "spec": spec}
    for key, value in changes.items():
        if key in run:
            run[key] = value
        elif key == "occurrence_threshold":
            spec["test_data"] = {**spec["test_data"], key: value}
        else:
            spec[key] = value
    return run


@pytest.mark.parametrize("change", [{"protocol": "q"}, {"budget": "standard"}, {"noise": "symmetric:0.2"},
                                    {"selection": "test_fold"}, {"selection": "last_epoch"},
                                    {"decision_threshold": 0.4}, {"occurrence_threshold": 1.0},
                                    {"fold_name": "bp4d_to_disfa", "test_data": {"profile": "disfa"}},
                                    {"method": {"model": {"init": "imagenet"}}}, {"data_fingerprint": "1" * 20}])
def test_every_part_of_the_setting_separates_runs(change):
    assert run_key(_stored(**change)) != run_key(_stored())


def test_runs_stored_as_official_read_as_last_epoch():
    assert run_key(_stored(selection="official")) == run_key(_stored(selection="last_epoch"))


def _store_runs(db, runs, skill, device):
    with ResultStore(db) as store:
        for run in runs:
            store_synthetic_run(store, run, skill)
            store._conn.execute("UPDATE runs SET provenance_json = json_set(provenance_json, '$.device', ?) "
                                "WHERE run_id = ?", (device, run.run_id))


def test_test_fold_selection_is_its_own_row_flagged_and_never_ranked(tmp_path):
    db = tmp_path / "results.sqlite"
    strict = synthetic_runs("wce", "synth_bp4d_3fold")
    published = [run.model_copy(update={"selection": "test_fold"}) for run in strict]
    _store_runs(db, strict, 1.0, "cpu (2 threads)")
    _store_runs(db, published, 3.0, "cpu (2 threads)")  # scores higher, as selecting on the test fold does
    with ResultStore(db) as store:
        (board,) = leaderboards(store.runs(), store, resamples=200)
    first, second = board.rows
    assert (first.method, first.selection, first.rank, first.optimistic) == ("wce", "strict", 1, False)
    assert (second.method, second.selection, second.rank, second.optimistic) == ("wce", "test_fold", 0, True)
    assert second.f1.mean > first.f1.mean and len(first.run_ids) == len(second.run_ids) == 3
    assert second.significance.pairs == 3  # paired with the ranked best, fold by fold
    markdown = format_leaderboards([board], "md").splitlines()
    rows = [line for line in markdown if line.startswith("| measured")]
    assert "| 1 | wce | supervised | strict | False |" in rows[0] and "|  | wce | supervised | test_fold | True |" in rows[1]
    printed = runner.invoke(app, ["results", "--db", str(db), "--leaderboard", "--format", "md"])
    assert printed.exit_code == 0 and "warning" not in printed.stderr
    html_report = runner.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "report")])
    assert html_report.exit_code == 0
    assert (tmp_path / "report" / "index.html").read_text().count('class="tag optimistic"') == 1 + 1  # note + row


def test_a_row_pooling_machines_is_warned_about(tmp_path):
    db = tmp_path / "results.sqlite"
    runs = synthetic_runs("wce", "synth_bp4d_3fold")
    _store_runs(db, runs[:2], 1.0, "x86_64 (2 threads)")
    _store_runs(db, runs[2:], 1.0, "x86_64 (16 threads)")
    printed = runner.invoke(app, ["results", "--db", str(db), "--leaderboard", "--format", "csv"])
    assert printed.exit_code == 0
    (warning,) = printed.stderr.strip().splitlines()
    assert warning.startswith("warning: synth_bp4d_3fold") and "x86_64 (16 threads); x86_64 (2 threads)" in warning


def test_runs_on_another_preparation_of_the_data_get_their_own_leaderboard(tmp_path):
    db = tmp_path / "results.sqlite"
    runs = synthetic_runs("wce", "synth_bp4d_3fold")
    reprepared = [run.model_copy(update={"data_fingerprint": "f" * 20}) for run in runs]  # as after `prepare` again
    _store_runs(db, runs, 1.0, "cpu")
    _store_runs(db, reprepared, 3.0, "cpu")
    with ResultStore(db) as store:
        boards = leaderboards(store.runs(), store, resamples=200)
    assert sorted(len(board.rows[0].run_ids) for board in boards) == [3, 3]
    assert len({board.setting.title for board in boards}) == 2
    assert {board.setting.test_label for board in boards} == {f"SynthAU bp4d (data {runs[0].data_fingerprint[:8]})",
                                                             "SynthAU bp4d (data ffffffff)"}
    printed = runner.invoke(app, ["results", "--db", str(db), "--leaderboard", "--format", "csv"])
    assert printed.exit_code == 0 and "data_fingerprint" in printed.stdout.splitlines()[0]
    assert sorted(load_results(db, per="run")["data_fingerprint"]) == sorted(
        [run.data_fingerprint for run in runs] + ["f" * 20] * 3)
    with ResultStore(db) as store:
        (labels,) = label_stats(store.runs(), store)
    assert labels.frames == sum(len(run.test_subjects) for run in runs) * 4  # one preparation's test sets, not both


def test_cross_dataset_rows_compare_with_in_domain_runs_on_the_same_preparation_only(tmp_path):
    def prepared_as(runs, fingerprint):  # the runs' datasets as prepared ones, the target with this content hash
        return [run.model_copy(update={
            "train_data": PreparedConfig(dataset=run.train_data.profile),
            "test_data": PreparedConfig(dataset=run.test_data.profile, fingerprint=fingerprint),
            "data_fingerprint": fingerprint * 20}) for run in runs]

    cross = prepared_as(synthetic_runs("wce", "synth_cross_dataset"), "0")
    in_domain = {seeds: {"same": prepared_as(synthetic_runs("wce", "synth_bp4d_3fold", seeds=seeds[:1]), "0"),
                         "other": prepared_as(synthetic_runs("wce", "synth_bp4d_3fold", seeds=seeds[1:]), "f")}
                 for seeds in ((0, 1), (1, 0))}  # both orders in which the store lists them
    for seeds, stored, expected in (((0, 1), ["other"], None), ((0, 1), ["same", "other"], 3),
                                    ((1, 0), ["same", "other"], 3)):
        db = tmp_path / f"{seeds}-{'-'.join(stored)}.sqlite"
        _store_runs(db, [*cross, *(run for name in stored for run in in_domain[seeds][name])], 1.0, "cpu")
        with ResultStore(db) as store:
            (row,) = [row for row in cross_dataset(store.runs()) if row.setting.test == "disfa_to_bp4d"]
        assert (row.in_domain.n if row.in_domain else None) == expected, stored


def test_noise_curves_hold_the_methods_measured_under_noise(tmp_path):
    db = tmp_path / "results.sqlite"
    _store_runs(db, [*synthetic_runs("wce", "synth_bp4d_3fold"), *synthetic_runs("wce", "synth_bp4d_3fold", "symmetric:0.2"),
                     *synthetic_runs("aunce", "synth_bp4d_3fold")], 1.0, "cpu")
    with ResultStore(db) as store:
        (curve,) = noise_curves(store.runs())
    assert list(curve.points) == ["wce"] and curve.levels == [0.0, 0.2]  # aunce has clean runs only
    assert [stat.n for stat in curve.points["wce"]] == [3, 3]


# -------------------------------------------------------------------------------------- selection
def test_selection_policies_choose_epochs_on_what_they_say(tiny_specs, short_wce, tmp_path):
    db = tmp_path / "results.sqlite"
    for selection in ("strict", "last_epoch", "test_fold"):
        result = _run(short_wce, tiny_specs / "tiny_easy.yaml", db, "--folds", "1", "--selection", selection)
        assert result.exit_code == 0, result.output
    runs = {run["selection"]: run for run in ResultStore(db).runs()}
    frames = {name: run["provenance"]["frames"] for name, run in runs.items()}
    assert frames["strict"]["val"] > 0 and frames["strict"]["train"] + frames["strict"]["val"] == frames["last_epoch"]["train"]
    assert frames["last_epoch"]["val"] == 0 and runs["last_epoch"]["provenance"]["training"]["selected_epoch"] == 2
    assert frames["test_fold"]["val"] == frames["test_fold"]["test"]  # the test fold picks the epoch
    assert frames["test_fold"]["train"] == frames["last_epoch"]["train"]
    assert len({run["run_id"] for run in runs.values()}) == 3


# ------------------------------------------------------------------------------------ failures
def test_one_failing_run_does_not_stop_the_plan(tiny_specs, short_wce, tmp_path, monkeypatch):
    real = launch.run_frames

    def broken_on_fold_2(config, subjects, aus, root, loading, progress):
        if list(subjects) == ["B005", "B006", "B007", "B008"]:  # the test subjects of fold 2
            raise RuntimeError("disk went away")
        return real(config, subjects, aus, root, loading, progress)

    db = tmp_path / "results.sqlite"
    monkeypatch.setattr(launch, "run_frames", broken_on_fold_2)
    failed = _run(short_wce, tiny_specs / "tiny_easy.yaml", db)
    assert failed.exit_code == 1
    assert "2 done, 1 failed, 0 skipped of 3 run(s)" in failed.stdout
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in failed.stderr
    assert lines[0].startswith("failed: short_wce fold2 seed 0") and lines[0].endswith("RuntimeError: disk went away")
    assert lines[1] == "error: 1 of 3 run(s) failed; --debug prints the tracebacks"
    statuses = {run["fold"]: (run["status"], run["error"]) for run in ResultStore(db).runs()}
    assert statuses == {1: ("done", None), 2: ("failed", "RuntimeError: disk went away"), 3: ("done", None)}

    debug = _run(short_wce, tiny_specs / "tiny_easy.yaml", db, "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "broken_on_fold_2" in debug.stderr
    assert debug.stdout.count("already done, skipping") == 2

    monkeypatch.setattr(launch, "run_frames", real)
    fixed = _run(short_wce, tiny_specs / "tiny_easy.yaml", db)
    assert fixed.exit_code == 0 and "1 done, 0 failed, 2 skipped of 3 run(s)" in fixed.stdout
    assert [run["status"] for run in ResultStore(db).runs()] == ["done"] * 3


def test_redo_replaces_a_done_run(tiny_specs, short_wce, tmp_path):
    db = tmp_path / "results.sqlite"
    assert _run(short_wce, tiny_specs / "tiny_easy.yaml", db, "--folds", "1").exit_code == 0
    (before,) = ResultStore(db).runs()
    again = _run(short_wce, tiny_specs / "tiny_easy.yaml", db, "--folds", "1", "--redo")
    assert again.exit_code == 0 and "1 done, 0 failed, 0 skipped" in again.stdout
    (after,) = ResultStore(db).runs()
    assert after["run_id"] == before["run_id"] and after["status"] == "done"
    assert after["provenance"]["timings_s"] != before["provenance"]["timings_s"]
    assert after["mean_f1"] == pytest.approx(before["mean_f1"], abs=1e-6)  # same seed, same thread count


def test_a_run_with_too_few_frames_for_one_batch_is_refused_before_training(tiny_specs, tmp_path):
    method = tmp_path / "huge_batch.yaml"
    method.write_text(SHORT_WCE.replace("batch_size: 32", "batch_size: 4096"))
    db = tmp_path / "results.sqlite"
    result = _run(method, tiny_specs / "tiny_easy.yaml", db, "--folds", "1")
    assert result.exit_code == 1
    assert "field 'train.batch_size': 4096 is more than the" in result.stderr and "Traceback" not in result.stderr
    (stored,) = ResultStore(db).runs()
    assert stored["status"] == "failed" and "no batch would train" in stored["error"]


# ------------------------------------------------------------------------------ bad specs, one line
METHOD_CASES = {
    "duplicate key": (SHORT_WCE + "recipe: supervised\n", "line 6: invalid YAML (duplicate key 'recipe')"),
    "epochs 1e29": (SHORT_WCE.replace("epochs: 2", "epochs: 1e29"), "field 'train.epochs': Input should be a valid integer"),
    "epochs 0": (SHORT_WCE.replace("epochs: 2", "epochs: 0"), "field 'train.epochs': Input should be greater than or equal to 1"),
    "batch size as text": (SHORT_WCE.replace("batch_size: 32", 'batch_size: "16"'),
                           "field 'train.batch_size': Input should be a valid integer (got '16')"),
    "unknown loss option": (SHORT_WCE.replace("{name: wce}", "{name: wce, margin: 2}"),
                            "field 'loss.margin': loss 'wce' has no option 'margin'"),
    "unknown backbone": (SHORT_WCE.replace("backbone: resnet18", "backbone: resnet18x"),
                         "field 'model.backbone': unknown timm backbone 'resnet18x'"),
    "binary file": (None, "not a text file (expected UTF-8 YAML)"),
}


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_bad_method_yaml_is_refused_with_one_line_naming_file_and_field(case, tiny_specs, tmp_path):
    text, message = METHOD_CASES[case]
    method = tmp_path / "bad.yaml"
    if text is None:
        method.write_bytes(bytes(range(256)))
    else:
        method.write_text(text)
    db = tmp_path / "results.sqlite"
    result = _run(method, tiny_specs / "tiny_easy.yaml", db)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line and ("bad" in line) and "Traceback" not in result.stderr
    assert not db.exists() or not ResultStore(db).runs()  # nothing stored, let alone done


PROTOCOL_CASES = {
    "crop larger than the faces": (("crop_size: 40", "crop_size: 64"),
                                   "field 'budgets.quick.crop_size': 64 px is larger than the 48 px faces"),
    "n_folds as text": (("n_folds: 3", 'n_folds: "3"'), "field 'split.kfold.n_folds': Input should be a valid integer (got '3')"),
    "unknown selection": (("selection: strict", "selection: official"), "field 'selection': Input should be 'strict'"),
    "unknown profile": (("profile: bp4d,", "profile: bp4dx,"), "data settings of budget 'quick': field 'profile'"),
    "unknown data field": (("difficulty: 0.25", "difficulty: 0.25, blur: 3"),
                           "data settings of budget 'quick': field 'blur': Extra inputs are not permitted"),
    "image size 8": (("image_size: 48", "image_size: 8"), "data settings of budget 'quick': field 'image_size'"),
    "subjects 1e14": (("subjects: 12", "subjects: 1e14"), "data settings of budget 'quick': field 'subjects'"),
}


@pytest.mark.parametrize("case", sorted(PROTOCOL_CASES))
def test_bad_protocol_yaml_is_refused_with_one_line(case, tiny_specs, short_wce, tmp_path):
    (old, new), message = PROTOCOL_CASES[case]
    text = (tiny_specs / "tiny_easy.yaml").read_text()
    assert old in text
    protocol = tmp_path / "bad_protocol.yaml"
    protocol.write_text(text.replace(old, new, 1))
    db = tmp_path / "results.sqlite"
    result = _run(short_wce, protocol, db)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line and "Traceback" not in result.stderr
    assert not db.exists() or not ResultStore(db).runs()


def test_a_run_another_process_is_executing_is_skipped_not_restarted(tiny_specs, short_wce, tmp_path):
    from filelock import FileLock

    from aunce_bench.protocols import plan_runs
    from aunce_bench.data.noise import NoiseSpec
    from aunce_bench.specs import load_method, load_protocol

    (run,) = plan_runs(load_method(str(short_wce)), load_protocol(str(tiny_specs / "tiny_easy.yaml")), "quick", [1], [0],
                       NoiseSpec.parse("none"))
    db = tmp_path / "results.sqlite"
    with FileLock(tmp_path / "results.locks" / f"{run.run_id}.lock"):  # as the other process holds it
        result = _run(short_wce, tiny_specs / "tiny_easy.yaml", db, "--folds", "1")
    assert result.exit_code == 0 and "running in another process, skipping: short_wce fold1" in result.stdout
    assert "0 done, 0 failed, 1 skipped of 1 run(s)" in result.stdout and ResultStore(db).runs() == []


def test_names_are_found_on_the_search_path_and_listed_with_their_origin(short_wce, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    (folder / "methods").mkdir(parents=True)
    (folder / "methods" / "short_wce.yaml").write_text(SHORT_WCE)
    monkeypatch.setenv("AUNCE_BENCH_PATH", str(folder))
    listed = runner.invoke(app, ["list", "methods"], env={"COLUMNS": "200"})  # not console.width: it would stick
    assert listed.exit_code == 0
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[3:5]]
            for line in listed.output.splitlines() if line.count("│") == 5 and line.split("│")[1].strip()}
    assert rows["short_wce"] == ["other", str(folder)] and rows["aunce"] == ["contrastive", "built-in"]
    assert rows["aunce_maxpos"] == ["ablation of aunce", "built-in"]
    from aunce_bench.specs import load_method

    assert load_method("short_wce").train.epochs == 2
