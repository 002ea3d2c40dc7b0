"""`run --track tensorboard|mlflow`: each finished run, as stored, is logged to the trackers and reads back the
same; a tracker that is missing, unreachable or unknown never fails a run."""

import builtins

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.results import ResultStore
from aunce_bench.trackers import HISTORY_FIELDS, MLFLOW_PARAM_LIMIT, log_run

runner = CliRunner()

TRACKED_WCE = """\
name: tracked_wce
recipe: supervised
model: {backbone: test_resnet, graph: false, dim: 16}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 2}
"""


@pytest.fixture(autouse=True)
def no_tracking_server(monkeypatch):
    """MLflow logs to the local store under --track-dir, in the experiment named after the protocol."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def _run(tiny_specs, tmp_path, *track: str):
    method = tmp_path / "tracked_wce.yaml"
    method.write_text(TRACKED_WCE)
    return runner.invoke(app, ["run", "--method", str(method), "--protocol", str(tiny_specs / "tiny_easy.yaml"),
                               "--quick", "--folds", "1", "--db", str(tmp_path / "r.sqlite"),
                               "--track-dir", str(tmp_path / "tracking"), *track])


def _mlflow_run(track_dir, experiment: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{(track_dir / 'mlflow.db').as_posix()}")
    (tracked,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, tracked


def _events(track_dir, run_id: str) -> EventAccumulator:
    return EventAccumulator(str(track_dir / "tensorboard" / run_id)).Reload()


def test_a_run_tracked_to_tensorboard_and_mlflow_reads_back_as_stored(tiny_specs, tmp_path):
    result = _run(tiny_specs, tmp_path, "--track", "tensorboard", "--track", "mlflow")
    assert result.exit_code == 0, result.output
    assert "--track" not in result.output  # no warning
    (stored,) = ResultStore(tmp_path / "r.sqlite").runs()
    history, track_dir = stored["history"], tmp_path / "tracking"
    assert [(entry["stage"], entry["epoch"]) for entry in history] == [("supervised", 1), ("supervised", 2)]

    events = _events(track_dir, stored["run_id"])
    for field in HISTORY_FIELDS:
        assert [(event.step, event.value) for event in events.Scalars(f"supervised/{field}")] == [
            (entry["epoch"], pytest.approx(entry[field], rel=1e-6)) for entry in history]
    assert events.Scalars("test/mean_f1")[0].value == pytest.approx(stored["mean_f1"], rel=1e-6)
    for au, f1 in stored["per_au_f1"].items():
        assert events.Scalars(f"test/f1/{au}")[0].value == pytest.approx(f1, rel=1e-6)
    text = events.Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"run_id: {stored['run_id']}" in text and "status: done" in text
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    client, tracked = _mlflow_run(track_dir, "tiny_easy")
    assert (tracked.info.run_name, tracked.info.status) == ("tracked_wce fold1 seed0", "FINISHED")
    assert tracked.data.tags["aunce_bench.run_id"] == stored["run_id"]
    assert tracked.data.params["method.name"] == "tracked_wce"
    assert float(tracked.data.params["method.train.lr"]) == 2e-3
    assert tracked.data.params["budget"] == "quick" and tracked.data.params["aus"] == "[4, 12]"
    losses = sorted((m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, "supervised/loss"))
    assert losses == [(entry["epoch"], entry["loss"]) for entry in history]
    assert tracked.data.metrics["test/mean_f1"] == stored["mean_f1"]
    assert tracked.data.metrics["test/chance_f1"] == stored["chance_f1"]


def test_a_missing_tracker_and_an_unreachable_server_warn_one_line_each_and_the_run_is_done(
        tiny_specs, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = _run(tiny_specs, tmp_path, "--track", "tensorboard", "--track", "mlflow")
    assert result.exit_code == 0, result.output
    (stored,) = ResultStore(tmp_path / "r.sqlite").runs()
    assert stored["status"] == "done"
    warnings = [line for line in result.output.splitlines() if line.startswith("--track")]
    assert len(warnings) == 2, result.output
    assert warnings[0] == (f"--track tensorboard: not installed (pip install 'aunce-bench[tensorboard]'); "
                           f"run {stored['run_id']} not tracked")
    assert "127.0.0.1:9" in warnings[1] and warnings[1].endswith(f"run {stored['run_id']} not tracked")
    assert not (tmp_path / "tracking").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--track", "wandb"], "error: invalid --track: 'wandb'; choose tensorboard, mlflow"),
    (["--track-dir", "elsewhere"], "error: --track-dir needs --track tensorboard or --track mlflow"),
])
def test_a_bad_track_option_is_refused_with_one_line_before_any_run(args, message, tmp_path):
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "synth_bp4d_3fold", "--quick",
                                 "--db", str(tmp_path / "r.sqlite"), *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "r.sqlite").exists()


def test_a_failed_run_is_tracked_with_its_error_and_values_fit_the_mlflow_limits(tmp_path):
    run = {"run_id": "f00d" * 5, "method": "m", "protocol": "p", "seed": 0, "noise": "symmetric:0.2",
           "status": "failed", "mean_f1": None, "chance_f1": None, "per_au_f1": {}, "wall_s": 3.0,
           "error": "training diverged: the loss is nan at epoch 2",
           "history": [{"stage": "init pretraining (SynthFace)", "epoch": 1, "loss": 0.5, "lr": None, "val_f1": None,
                        "images_per_s": 10.0}],
           "spec": {"fold_name": "fold2", "aus": [1, 2], "method": {"name": "m", "citation": "x" * 7000}}}
    assert log_run(run, ["tensorboard", "mlflow"], tmp_path) == []

    _, tracked = _mlflow_run(tmp_path, "p")
    assert (tracked.info.run_name, tracked.info.status) == ("m fold2 seed0 symmetric:0.2", "FAILED")
    assert tracked.data.tags["aunce_bench.error"] == run["error"]
    assert tracked.data.params["aus"] == "[1, 2]"
    citation = tracked.data.params["method.citation"]
    assert len(citation) == MLFLOW_PARAM_LIMIT and citation.endswith("x…")
    expected = {"init pretraining SynthFace/loss": 0.5, "init pretraining SynthFace/images_per_s": 10.0}
    assert tracked.data.metrics == expected  # the missing values and test metrics left out

    events = _events(tmp_path, run["run_id"])
    assert {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]} == expected
    assert "error: training diverged" in events.Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
