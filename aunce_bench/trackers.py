"""Experiment trackers (`run --track tensorboard|mlflow`): each finished run, as stored, logged to TensorBoard or
MLflow.

A run is logged after the store has it, done or failed: its resolved spec as dotted parameters
(`method.train.lr`), its history as `<stage>/<field>` metrics at step = epoch, its test metrics (`test/mean_f1`,
`test/chance_f1`, `test/f1/<AU>`), its id, status and error. Tracking never fails a run: a tracker that is not
installed, cannot be reached or raises gives a one-line warning instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from aunce_bench.errors import UserError

TRACKERS = ("tensorboard", "mlflow")
HISTORY_FIELDS = ("loss", "lr", "val_f1", "images_per_s")
MLFLOW_KEY_LIMIT = 250  # characters of a parameter, metric or tag name
MLFLOW_PARAM_LIMIT = 6000  # characters of a parameter value
MLFLOW_TAG_LIMIT = 8000  # characters of a tag value
MLFLOW_BATCH = 100  # parameters (or tags) in one log_batch request
MLFLOW_METRIC_BATCH = 1000  # metrics in one log_batch request
# A tracking server that does not answer costs at most about a minute per run, unless the user set these.
MLFLOW_SERVER_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


def check_trackers(names: list[str]) -> list[str]:
    """The --track names, each once, in order; an unknown one is a UserError."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"invalid --track: '{name}'; choose {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def log_run(run: dict, trackers: list[str], track_dir: Path) -> list[str]:
    """Log one stored run (a dict of ResultStore.runs()) to each tracker; one warning line per tracker that
    failed. TensorBoard writes under `track_dir/tensorboard/<run_id>/`; MLflow logs to $MLFLOW_TRACKING_URI, else
    to the SQLite store `track_dir/mlflow.db`."""
    log = {"tensorboard": _log_to_tensorboard, "mlflow": _log_to_mlflow}
    warnings = []
    for name in trackers:
        try:
            log[name](run, track_dir)
        except ImportError:
            warnings.append(f"--track {name}: not installed (pip install 'aunce-bench[{name}]'); "
                            f"run {run['run_id']} not tracked")
        except Exception as error:
            reason = _truncated(" ".join(str(error).split()), 300) or type(error).__name__
            warnings.append(f"--track {name}: {reason}; run {run['run_id']} not tracked")
    return warnings


def flat_params(spec: dict, prefix: str = "") -> dict[str, str | int | float | bool | None]:
    """The leaves of a nested spec under dotted keys (`method.train.lr`); lists and empty mappings as JSON."""
    params = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            params.update(flat_params(value, f"{name}."))
        elif value is None or isinstance(value, (str, int, float, bool)):
            params[name] = value
        else:
            params[name] = json.dumps(value)
    return params


def run_metrics(run: dict) -> list[tuple[str, float, int]]:
    """(name, value, step) of each per-epoch value of the run's history (step = epoch) and of each test metric
    (step 0), missing values left out. Names keep what MLflow accepts of the stage names."""
    logged = [(f"{_metric_name(entry['stage'])}/{field}", entry[field], entry["epoch"])
              for entry in run["history"] for field in HISTORY_FIELDS if entry[field] is not None]
    final = {"test/mean_f1": run["mean_f1"], "test/chance_f1": run["chance_f1"],
             **{f"test/f1/{au}": f1 for au, f1 in run["per_au_f1"].items()}}
    return logged + [(name, value, 0) for name, value in final.items() if value is not None]


def run_name(run: dict) -> str:
    """`<method> <fold> seed<s>`, and the noise setting when there is one."""
    noise = "" if run["noise"] == "none" else f" {run['noise']}"
    return f"{run['method']} {run['spec']['fold_name']} seed{run['seed']}{noise}"


def _metric_name(text: str) -> str:
    """`text` without the characters MLflow refuses in names (e.g. "init pretraining (SynthFace)" ->
    "init pretraining SynthFace")."""
    return " ".join(re.sub(r"[^\w\-. :/]", "", text).split())


def _log_to_tensorboard(run: dict, track_dir: Path) -> None:
    """Scalars, a text summary of the run and the HParams plugin's record (the flat spec against the test
    metrics), in `track_dir/tensorboard/<run_id>/`; a run logged again (redone) replaces its earlier files."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    folder = track_dir / "tensorboard" / run["run_id"]
    shutil.rmtree(folder, ignore_errors=True)
    logged = run_metrics(run)
    with SummaryWriter(log_dir=str(folder)) as writer:
        for name, value, step in logged:
            writer.add_scalar(name, value, step)
        writer.add_text("run", "  \n".join(f"{key}: {value}" for key, value in _run_tags(run).items()))
        experiment, session_start, session_end = hparams(
            flat_params(run["spec"]), {name: value for name, value, _ in logged if name.startswith("test/")})
        for summary in (experiment, session_start, session_end):
            writer.file_writer.add_summary(summary)


def _log_to_mlflow(run: dict, track_dir: Path) -> None:
    """One MLflow run in the experiment named after the protocol ($MLFLOW_EXPERIMENT_NAME if set), through the
    client API (no global active run): parameters, metrics, tags, then its end status."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None  # a server keeps artifacts where it likes
    if uri:
        for variable, value in MLFLOW_SERVER_DEFAULTS.items():
            os.environ.setdefault(variable, value)
    else:
        track_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(track_dir / 'mlflow.db').resolve().as_posix()}"
        artifacts = (track_dir / "mlartifacts").resolve().as_uri()
    with _quiet("mlflow", "alembic"):  # e.g. the local store's "Creating initial MLflow database tables..."
        client = MlflowClient(tracking_uri=uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or run["protocol"]
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment(experiment_name, artifact_location=artifacts))
        now = int(time.time() * 1000)
        started = now - int((run["wall_s"] or 0) * 1000)
        run_id = client.create_run(experiment_id, start_time=started, run_name=run_name(run)).info.run_id
        params = [Param(key[:MLFLOW_KEY_LIMIT], _truncated(value, MLFLOW_PARAM_LIMIT))
                  for key, value in flat_params(run["spec"]).items()]
        tags = [RunTag(f"aunce_bench.{key}", _truncated(value, MLFLOW_TAG_LIMIT))
                for key, value in _run_tags(run).items()]
        for start in range(0, max(len(params), len(tags)), MLFLOW_BATCH):
            client.log_batch(run_id, params=params[start:start + MLFLOW_BATCH], tags=tags[start:start + MLFLOW_BATCH])
        logged = [Metric(name[:MLFLOW_KEY_LIMIT], float(value), now, step) for name, value, step in run_metrics(run)]
        for start in range(0, len(logged), MLFLOW_METRIC_BATCH):
            client.log_batch(run_id, metrics=logged[start:start + MLFLOW_METRIC_BATCH])
        client.set_terminated(run_id, "FINISHED" if run["status"] == "done" else "FAILED", end_time=now)


def _run_tags(run: dict) -> dict[str, str]:
    """The run's id and status, and its error if it failed."""
    tags = {"run_id": run["run_id"], "status": run["status"]}
    if run["error"]:
        tags["error"] = run["error"]
    return tags


def _truncated(value, limit: int) -> str:
    """`value` as text, cut to `limit` characters (the last one an ellipsis) when longer."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


@contextmanager
def _quiet(*names: str):
    """The named loggers say warnings and errors only, for the time of the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
