"""End to end on a tiny easy protocol: methods learn, results are stored, reruns skip, failures are stored."""

import json

import pytest
import torch
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.launch import Interrupted, execute_run
from aunce_bench.losses import SUPERVISED_LOSSES
from aunce_bench.protocols import plan_runs
from aunce_bench.results import ResultStore
from aunce_bench.specs import load_method, load_protocol
from aunce_bench.training.common import Progress

runner = CliRunner()


def first_fold_run(specs, method: str, noise: str = "none", protocol: str = "tiny_easy"):
    method_spec = load_method(str(specs / f"{method}.yaml"))
    protocol_spec = load_protocol(str(specs / f"{protocol}.yaml"))
    return plan_runs(method_spec, protocol_spec, "quick", [1], [0], NoiseSpec.parse(noise))[0]


def run_and_load(specs, method, tmp_path, protocol: str = "tiny_easy"):
    run = first_fold_run(specs, method, protocol=protocol)
    store = ResultStore(tmp_path / "results.sqlite")
    outcome = execute_run(run, store, torch.device("cpu"), Progress())
    assert outcome.status == "done", outcome.error
    return run, store, store.runs()[0]


def test_supervised_method_learns_and_beats_chance(tiny_specs, tmp_path):
    # the frequent AUs: on the rare AU4, 12 epochs from scratch land near chance or above it by thread count
    run, store, stored = run_and_load(tiny_specs, "tiny_wce", tmp_path, protocol="tiny_easy_frequent")
    training = stored["provenance"]["training"]
    assert training["final_loss"] < 0.8 * training["first_loss"]
    assert stored["mean_f1"] > stored["chance_f1"] + 0.05, stored["per_au_f1"]
    assert set(stored["per_au_f1"]) == {"AU6", "AU12"}
    predictions = store.predictions(run.run_id)
    assert predictions.num_rows == stored["provenance"]["frames"]["test"]
    assert {"subject", "frame", "prob_AU12", "label_AU6"} <= set(predictions.column_names)


def test_contrastive_method_learns_and_beats_chance_on_frequent_aus(tiny_specs, tmp_path):
    run, store, stored = run_and_load(tiny_specs, "tiny_aunce", tmp_path, protocol="tiny_easy_frequent")
    training = stored["provenance"]["training"]
    assert training["pretrain_final_loss"] < training["pretrain_first_loss"] - 0.1
    assert 1 <= training["probe_selected_epoch"] <= 60
    assert stored["mean_f1"] > stored["chance_f1"] + 0.03, stored["per_au_f1"]
    probabilities = store.predictions(run.run_id).column("prob_AU12").to_numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all() and probabilities.std() > 0


def one_epoch_noisy_run(specs, noise: str, store: ResultStore):
    """tiny_wce for one epoch on fold 1 under `noise`, executed into `store`; returns its RunSpec."""
    run = first_fold_run(specs, "tiny_wce", noise=noise)
    run = run.model_copy(update={"method": run.method.model_copy(
        update={"train": run.method.train.model_copy(update={"epochs": 1})})})
    assert execute_run(run, store, torch.device("cpu"), Progress()).status == "done"
    return run


def test_noise_hits_training_labels_only_and_rates_are_stored(tiny_specs, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    run = one_epoch_noisy_run(tiny_specs, "missing_positive:0.5", store)
    stored = store.runs()[0]
    assert stored["noise"] == "missing_positive:0.5"
    for rates in stored["noise_rates"].values():
        assert rates["rho_01"] == 0.0 and 0.35 < rates["rho_10"] < 0.65
    test_labels = store.predictions(run.run_id).column("label_AU12").to_numpy()
    clean = ResultStore(tmp_path / "clean.sqlite")
    execute_run(run.model_copy(update={"noise": NoiseSpec.parse("none")}), clean, torch.device("cpu"), Progress())
    clean_run = clean.runs()[0]["run_id"]
    assert (clean.predictions(clean_run).column("label_AU12").to_numpy() == test_labels).all()


def test_cli_run_results_and_resume(tiny_specs, tmp_path):
    db = tmp_path / "results.sqlite"
    args = ["run", "--method", str(tiny_specs / "tiny_fast_wce.yaml"), "--protocol",
            str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1,2", "--db", str(db)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "tiny_fast_wce on tiny_easy (quick budget)" in first.output
    listed = json.loads(runner.invoke(app, ["results", "--db", str(db), "--format", "json"]).output)
    assert [r["fold"] for r in listed] == [1, 2] and all(r["status"] == "done" for r in listed)
    for row in listed:
        assert {"run_id", "method", "protocol", "dataset", "fold", "seed", "noise", "status", "mean_f1", "per_au_f1",
                "chance_f1", "wall_s"} <= set(row)
        assert 0 <= row["mean_f1"] <= 1 and set(row["per_au_f1"]) == {"AU4", "AU12"}
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and second.output.count("already done, skipping") == 2
    assert json.loads(runner.invoke(app, ["results", "--db", str(db)]).output) == listed  # nothing retrained
    csv = runner.invoke(app, ["results", "--db", str(db), "--format", "csv"]).output.splitlines()
    assert csv[0].startswith("run_id,method,protocol") and "f1_AU12" in csv[0] and len(csv) == 3
    markdown = runner.invoke(app, ["results", "--db", str(db), "--format", "md"]).output.splitlines()
    assert markdown[0].startswith("| run_id |") and len(markdown) == 4


def test_interrupted_run_is_not_reported_done_and_reruns(tiny_specs, tmp_path, monkeypatch):
    run = first_fold_run(tiny_specs, "tiny_fast_wce")
    store = ResultStore(tmp_path / "results.sqlite")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(SUPERVISED_LOSSES._entries, "wce", interrupted)
    with pytest.raises(Interrupted) as raised:
        execute_run(run, store, torch.device("cpu"), Progress())
    assert raised.value.runs == [run]
    assert store.status(run.run_id) is None and store.runs() == []  # neither done nor failed: not stored
    db = store.path
    result = runner.invoke(app, ["run", "--method", str(tiny_specs / "tiny_fast_wce.yaml"), "--protocol",
                                 str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1", "--db", str(db)])
    assert result.exit_code == 130
    assert result.stderr == (f"interrupted: tiny_fast_wce fold1 seed 0 noise none ({run.run_id}) not stored, neither "
                             "done nor failed; run the same command again to redo it\n")
    assert json.loads(runner.invoke(app, ["results", "--db", str(db)]).output) == []
    monkeypatch.undo()
    assert execute_run(run, store, torch.device("cpu"), Progress()).status == "done"
    assert store.status(run.run_id) == "done"


def test_nan_loss_is_stored_as_failed_with_the_reason(tiny_specs, tmp_path, monkeypatch):
    monkeypatch.setitem(SUPERVISED_LOSSES._entries, "wce", lambda logits, labels, weights: logits.sum() * float("nan"))
    db = tmp_path / "results.sqlite"
    result = runner.invoke(app, ["run", "--method", str(tiny_specs / "tiny_wce.yaml"), "--protocol",
                                 str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1", "--db", str(db)])
    assert result.exit_code == 1
    assert "supervised training: loss became nan at epoch 1, batch 1" in result.stderr
    stored = ResultStore(db).runs()[0]
    assert stored["status"] == "failed" and "loss became nan" in stored["error"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "aunc", "--protocol", "synth_bp4d_3fold"], "unknown method 'aunc' (did you mean 'aunce'?)"),
        (["--method", "wce", "--protocol", "synth_bp4d"], "unknown protocol 'synth_bp4d'"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--folds", "4"], "fold 4 is out of range"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--noise", "symmetric"], "invalid --noise"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--budget", "huge"], "invalid --budget"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--folds", "one"], "invalid --folds"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--quick", "--budget", "full"],
         "--quick and --budget full both choose a budget"),
        (["--method", "wce", "--protocol", "synth_bp4d_3fold", "--quick", "--budget", "huge"],
         "--quick and --budget huge both choose a budget"),
    ],
)
def test_run_rejects_bad_input_with_one_line(arguments, message, tmp_path):
    result = runner.invoke(app, ["run", *arguments, "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["sweep", "--method", "wce", "--protocol", "synth_bp4d_3fold", "--param", "lr=0.1,0.2"],
    ["noise-curve", "--methods", "wce", "--protocol", "synth_bp4d_3fold", "--noise-type", "symmetric"],
    ["init", "build"],
])
def test_every_budget_option_refuses_quick_with_budget(command, tmp_path):
    result = runner.invoke(app, [*command, "--quick", "--budget", "standard", "--db", str(tmp_path / "r.sqlite")]
                           if command[0] != "init" else [*command, "--quick", "--budget", "standard"])
    assert result.exit_code == 2 and "--quick and --budget standard both choose a budget" in result.stderr


def test_list_shows_components():
    methods = runner.invoke(app, ["list", "methods"])
    assert methods.exit_code == 0 and "aunce" in methods.output and "wce_linear" in methods.output
    protocols = runner.invoke(app, ["list", "protocols"]).output
    assert "synth_cross_dataset" in protocols and "synth_pose" in protocols
    assert "synth_bp4d" in runner.invoke(app, ["list", "datasets"]).output
    assert runner.invoke(app, ["list", "things"]).exit_code == 2


def test_boundary_noise_runs_end_to_end_with_the_pool_in_frame_order(tiny_specs, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    one_epoch_noisy_run(tiny_specs, "boundary:0.4", store)
    rates = store.runs()[0]["noise_rates"]
    assert set(rates) == {"AU4", "AU12"} and sum(r["n_flipped"] for r in rates.values()) > 0


def test_weak_intensity_noise_uses_synthaus_true_intensities(tiny_specs, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    one_epoch_noisy_run(tiny_specs, "weak_intensity:0.4", store)
    for rates in store.runs()[0]["noise_rates"].values():
        assert rates["rho_01"] == 0.0 and rates["rho_10"] == pytest.approx(0.4, abs=0.02)
