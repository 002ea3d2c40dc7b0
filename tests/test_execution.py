"""Execution options (precision, channels-last, compile): they change speed, never a run's identity, and are
recorded in the run's provenance."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.loaders import FrameSet
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.losses import weighted_bce
from aunce_bench.models import AUEncoder, PerAULinear
from aunce_bench.models.backbones import create_backbone
from aunce_bench.protocols import plan_runs
from aunce_bench.report.aggregate import leaderboards
from aunce_bench.results import ResultStore
from aunce_bench.specs import OptimSpec, load_method, load_protocol
from aunce_bench.training.common import ExecutionOptions, TrainContext
from aunce_bench.training.probe import extract_features
from aunce_bench.training.supervised import train_supervised
from test_report import store_synthetic_run, synthetic_runs

runner = CliRunner()
CPU = torch.device("cpu")

THREE_EPOCH_WCE = """\
name: three_epoch_wce
recipe: supervised
model: {backbone: resnet18, graph: false, dim: 16}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 3}
"""


def test_a_bf16_run_learns_records_its_precision_and_has_the_fp32_run_id(tiny_specs, tmp_path):
    method, protocol, db = tmp_path / "three_epoch_wce.yaml", tiny_specs / "tiny_easy.yaml", tmp_path / "r.sqlite"
    method.write_text(THREE_EPOCH_WCE)
    args = ["run", "--method", str(method), "--protocol", str(protocol), "--quick", "--folds", "1", "--db", str(db)]
    bf16 = runner.invoke(app, [*args, "--precision", "bf16"])
    assert bf16.exit_code == 0, bf16.output
    (stored,) = ResultStore(db).runs()
    training = stored["provenance"]["training"]
    assert np.isfinite(training["final_loss"]) and training["final_loss"] < training["first_loss"]
    assert stored["provenance"]["execution"] == {"precision": "bf16", "channels_last": False, "compile": False,
                                                 "compiled": False, "compile_error": None, "tf32": False,
                                                 "processes": 1}
    fp32_plan = plan_runs(load_method(str(method)), load_protocol(str(protocol)), "quick", [1], [0],
                          NoiseSpec.parse("none"))[0]
    assert stored["run_id"] == fp32_plan.run_id
    fp32 = runner.invoke(app, [*args, "--precision", "fp32"])  # the same run: resumed, not run again
    assert fp32.exit_code == 0 and "already done, skipping" in fp32.output


@pytest.mark.parametrize(("precision", "message"), [
    ("fp8", "invalid --precision: 'fp8'; choose fp32, bf16, fp16"),
    ("fp16", "invalid --precision: fp16 is for CUDA devices"),
])
def test_a_bad_precision_is_refused_with_one_line(precision, message, tmp_path):
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "synth_bp4d_3fold", "--precision", precision,
                                 "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _frames(count: int = 16, size: int = 32) -> FrameSet:
    rng = np.random.default_rng(0)
    return FrameSet(torch.from_numpy(rng.integers(0, 255, (count, 3, size, size), dtype=np.uint8)),
                    rng.integers(0, 2, (count, 2)).astype(np.int8))


class _Classifier(torch.nn.Module):
    def __init__(self, backbone: str = "resnet18"):
        super().__init__()
        self.encoder = AUEncoder(create_backbone(backbone, image_size=28), 2, 8, graph=False)
        self.head = PerAULinear(2, 8, 1)

    def forward(self, images):
        return self.head(self.encoder(images))


def _train_one_epoch(model: torch.nn.Module, ctx: TrainContext) -> dict[str, float]:
    return train_supervised(model, _frames(), None, OptimSpec(optimizer="adamw", lr=1e-3, batch_size=8, epochs=1),
                            weighted_bce, 28, 0.5, ctx)


def test_autocast_runs_convolutions_and_linear_layers_in_bf16_in_training_and_feature_extraction():
    model = _Classifier()
    seen = []
    for layer in (model.encoder.backbone.model.conv1, model.encoder.blocks.fc):
        layer.register_forward_hook(lambda module, inputs, output: seen.append((type(module).__name__, output.dtype)))
    bf16 = TrainContext(CPU, 0, execution=ExecutionOptions("bf16"))
    _train_one_epoch(model, bf16)
    assert set(seen) == {("Conv2d", torch.bfloat16), ("Linear", torch.bfloat16)}
    seen.clear()
    assert extract_features(model.encoder, _frames(), 28, bf16).dtype == torch.float32  # outputs stored as float32
    assert set(seen) == {("Conv2d", torch.bfloat16), ("Linear", torch.bfloat16)}
    seen.clear()
    extract_features(model.encoder, _frames(), 28, TrainContext(CPU, 0))
    assert set(seen) == {("Conv2d", torch.float32), ("Linear", torch.float32)}


def test_channels_last_reaches_the_inputs_of_convolutional_backbones_only_when_asked():
    formats = []
    for asked in (None, True):  # None: off on the CPU
        model = _Classifier()
        conv = model.encoder.backbone.model.conv1
        conv.register_forward_pre_hook(lambda module, inputs: formats.append(
            (inputs[0].is_contiguous(memory_format=torch.channels_last),
             module.weight.is_contiguous(memory_format=torch.channels_last))))
        ctx = TrainContext(CPU, 0, execution=ExecutionOptions(channels_last=asked))
        _train_one_epoch(model, ctx)
        assert ctx.execution_record()["channels_last"] is bool(asked)
    assert set(formats[:2]) == {(False, False)} and set(formats[-2:]) == {(True, True)}
    vit = _Classifier("vit_tiny_patch16_224")  # a transformer: its patch embedding alone does not make it a CNN
    ctx = TrainContext(CPU, 0, execution=ExecutionOptions(channels_last=True))
    ctx.prepare(vit)
    assert vit.encoder.backbone.memory_format == torch.contiguous_format and not ctx.execution_record()["channels_last"]


def _raises(*args, **kwargs):
    raise RuntimeError("no C++ compiler")


@pytest.mark.parametrize("where", ["compiling", "first compiled call"])
def test_compile_falls_back_to_eager_with_a_warning_and_completes(where, monkeypatch):
    monkeypatch.setattr(torch, "compile", _raises if where == "compiling" else lambda function: _raises)
    model, ctx = _Classifier(), TrainContext(CPU, 0, execution=ExecutionOptions(compile=True))
    with pytest.warns(RuntimeWarning, match=r"--compile: torch.compile failed \(RuntimeError: no C\+\+ compiler\)"):
        info = _train_one_epoch(model, ctx)
    assert np.isfinite(info["final_loss"]) and "forward" not in vars(model)  # the module's own forward again
    record = ctx.execution_record()
    assert record["compile"] and not record["compiled"] and record["compile_error"] == "RuntimeError: no C++ compiler"


def test_a_compiled_model_is_compiled_once_and_recorded(monkeypatch, recwarn):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda function: compiled.append(function) or function)
    model, ctx = _Classifier(), TrainContext(CPU, 0, execution=ExecutionOptions(compile=True))
    _train_one_epoch(model, ctx)
    ctx.prepare(model)  # e.g. the linear probe preparing the pretrained encoder again
    assert len(compiled) == 1 and "forward" in vars(model) and not recwarn.list
    assert ctx.execution_record()["compiled"] and ctx.execution_record()["compile_error"] is None


def test_a_leaderboard_row_pooling_precisions_is_warned_about(tmp_path):
    db = tmp_path / "results.sqlite"
    runs = synthetic_runs("wce", "synth_bp4d_3fold")
    with ResultStore(db) as store:
        for run in runs:
            store_synthetic_run(store, run, 1.0)
        for run, precision in zip(runs, ("fp32", "bf16", "bf16")):
            store._conn.execute("UPDATE runs SET provenance_json = json_set(provenance_json, '$.device', 'cpu', "
                                "'$.execution', json(?)) WHERE run_id = ?",
                                (f'{{"precision": "{precision}"}}', run.run_id))
        (board,) = leaderboards(store.runs(), store, resamples=100)
    (warning,) = board.warnings
    assert "pools runs from 2 machines or precisions (cpu; cpu, bf16)" in warning
    assert "differ slightly across devices, thread counts and precisions" in warning
