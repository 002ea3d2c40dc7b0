"""Multi-process training (aunce_bench.distributed, `run --nproc`).

The acceptance test: on CPU with 2 processes (gloo), one AUNCE step on a global batch, wired as the training
loops wire it (ShuffledBatches' share per rank, TrainContext.distribute, gathered embeddings and labels), gives
the loss, the gradients and the BatchNorm running statistics of one process on the same batch, to 1e-5; without
synchronised BatchNorm it does not, which shows that the test can fail.
"""

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from aunce_bench.distributed import (
    DistributedEnv,
    GlobalBatchNorm,
    destroy_process_group,
    gather,
    gather_with_grad,
    init_process_group,
    is_writer,
    rank_slice,
    sync_batchnorm,
    wrap_ddp,
)
from aunce_bench.data.loaders import ShuffledBatches
from aunce_bench.losses.aunce import aunce_loss
from aunce_bench.models.encoder import create_encoder
from aunce_bench.training.common import TrainContext
from aunce_bench.training.contrastive import _Embedding

WORLD = 2
BATCH = 8  # global batch of two-view images
NUM_AUS = 4
TOL = dict(atol=1e-5, rtol=1e-5)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two pre-augmented views [BATCH, 3, 32, 32] and labels [BATCH, NUM_AUS] with both classes of every AU."""
    g = torch.Generator().manual_seed(1)
    view1, view2 = torch.randn(2, BATCH, 3, 32, 32, generator=g)
    labels = (torch.rand(BATCH, NUM_AUS, generator=g) < 0.5).long()
    labels[0], labels[-1] = 0, 1  # on different ranks
    return view1, view2, labels


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return create_encoder("resnet18", num_aus=NUM_AUS, dim=16, graph=True, image_size=32).train()


def _global_batch(ranks: DistributedEnv | None) -> list[torch.Tensor]:
    """One shuffled batch of all BATCH frames, as ShuffledBatches gives it: this rank's share under `ranks`."""
    return list(ShuffledBatches(BATCH, BATCH, torch.Generator().manual_seed(5), ranks=ranks))


def _loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return aunce_loss(z1, z2, labels, generator=torch.Generator().manual_seed(0))


def _state(encoder: nn.Module, loss: torch.Tensor) -> dict:
    return {
        "loss": loss.detach(),
        "grads": {name: p.grad.clone() for name, p in encoder.named_parameters()},
        "buffers": {name: b.clone() for name, b in encoder.named_buffers()},
    }


def _bn_steps(bn: nn.Module, shape: tuple[int, ...], rows: slice) -> dict:
    """Two training steps then an eval forward of `bn` on rows `rows` of fixed global batches of `shape`."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
    out: dict = {"train": [], "input_grad": []}
    bn.train()
    for _ in range(2):
        x = (3 * torch.randn(shape, generator=g) + 1)[rows].requires_grad_()
        y = bn(x)
        (y * torch.randn(shape, generator=g)[rows]).sum().backward()
        out["train"].append(y.detach())
        out["input_grad"].append(x.grad)
    bn.eval()
    out["eval"] = bn(torch.randn(shape, generator=g)[rows]).detach()
    out["params_grad"] = torch.stack([bn.weight.grad, bn.bias.grad])
    out["buffers"] = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    return out


BN_CASES = {  # BatchNorm2d with a cumulative average (as recalibrate_batchnorm), BatchNorm1d on [B, K, D]
    "bn2d_cumulative": (lambda: nn.BatchNorm2d(3, momentum=None), (BATCH, 3, 5, 5)),
    "bn1d_3d_input": (lambda: nn.BatchNorm1d(4), (BATCH, 4, 6)),
}


def _gather_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 3, generator=g), torch.randn(3, BATCH, generator=g)


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    env = init_process_group("cpu", init_method=f"file://{tmp}/store")
    try:
        rows = rank_slice(BATCH, env)
        ctx = TrainContext(torch.device("cpu"), seed=0)
        assert ctx.ranks == env
        (positions,) = _global_batch(ctx.ranks)  # this rank's share, as the training loops take it
        for variant in ("sync", "plain"):
            encoder = _encoder()
            # the harness's wiring (synchronised BatchNorm, DDP), or DDP alone
            model = ctx.distribute(_Embedding(encoder)) if variant == "sync" else wrap_ddp(_Embedding(encoder), env, "cpu")
            view1, view2, labels = _batch()
            z1, z2 = model(torch.cat([view1[positions], view2[positions]])).chunk(2)
            loss = _loss(gather_with_grad(z1), gather_with_grad(z2), gather(labels[positions]))
            loss.backward()
            torch.save(_state(encoder, loss), f"{tmp}/{variant}{rank}.pt")
        units = {}
        for case, (make, shape) in BN_CASES.items():
            units[case] = _bn_steps(GlobalBatchNorm.from_batchnorm(make()), shape, rows)
            torch.distributed.all_reduce(units[case]["params_grad"])  # each rank holds its rows' share
        x, weight = _gather_inputs()
        x = x[rows].requires_grad_()
        (gather_with_grad(x).T * weight).sum().backward()  # a non-contiguous gradient reaches the gather
        units["gather_grad"] = x.grad
        torch.save(units, f"{tmp}/units{rank}.pt")
    finally:
        destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(str(tmp),), nprocs=WORLD, start_method="spawn")
    return {name: [torch.load(tmp / f"{name}{r}.pt") for r in range(WORLD)] for name in ("sync", "plain", "units")}


@pytest.fixture(scope="module")
def reference():
    """One process, both views in one forward as the contrastive training loop does."""
    encoder = _encoder()
    view1, view2, labels = _batch()
    (positions,) = _global_batch(None)
    z1, z2 = encoder.embed(torch.cat([view1[positions], view2[positions]])).chunk(2)
    loss = _loss(z1, z2, labels[positions])
    loss.backward()
    return _state(encoder, loss)


def _max_differences(state: dict, ref: dict) -> dict[str, float]:
    assert state["grads"].keys() == ref["grads"].keys() and state["buffers"].keys() == ref["buffers"].keys()
    return {
        "loss": (state["loss"] - ref["loss"]).abs().item(),
        "grads": max((state["grads"][k] - g).abs().max().item() for k, g in ref["grads"].items()),
        "buffers": max((state["buffers"][k] - b).abs().max().item() for k, b in ref["buffers"].items()),
    }


def test_two_processes_give_the_single_process_step(two_process_results, reference):
    for rank, state in enumerate(two_process_results["sync"]):
        print(f"rank {rank} max |difference| to one process:", _max_differences(state, reference))
        torch.testing.assert_close(state["loss"], reference["loss"], **TOL)
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(state["grads"][name], grad, **TOL, msg=lambda m: f"grad of {name}: {m}")
        for name, buffer in reference["buffers"].items():
            torch.testing.assert_close(state["buffers"][name], buffer, **TOL, msg=lambda m: f"{name}: {m}")


def test_unsynchronised_batchnorm_differs(two_process_results, reference):
    """The same step with per-rank BatchNorm statistics: the comparison above would fail."""
    differences = _max_differences(two_process_results["plain"][0], reference)
    print("without synchronised BatchNorm, max |difference| to one process:", differences)
    assert differences["grads"] > 1e-5


@pytest.mark.parametrize("case", BN_CASES)
def test_global_batchnorm_over_two_processes(two_process_results, case):
    make, shape = BN_CASES[case]
    ref = _bn_steps(make(), shape, slice(None))
    for rank, results in enumerate(two_process_results["units"]):
        got, rows = results[case], rank_slice(BATCH, DistributedEnv(rank, WORLD, rank))
        for step in range(2):
            torch.testing.assert_close(got["train"][step], ref["train"][step][rows], **TOL)
            torch.testing.assert_close(got["input_grad"][step], ref["input_grad"][step][rows], **TOL)
        torch.testing.assert_close(got["eval"], ref["eval"][rows], **TOL)
        torch.testing.assert_close(got["params_grad"], ref["params_grad"], **TOL)
        for actual, expected in zip(got["buffers"], ref["buffers"]):
            torch.testing.assert_close(actual, expected, **TOL)


def test_gather_with_grad_sums_the_gradients_of_every_rank(two_process_results):
    """Every rank computes the same loss of the gathered rows: each row's gradient is WORLD times its own."""
    _, weight = _gather_inputs()
    for rank, results in enumerate(two_process_results["units"]):
        rows = rank_slice(BATCH, DistributedEnv(rank, WORLD, rank))
        torch.testing.assert_close(results["gather_grad"], WORLD * weight.T[rows])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batchnorm_without_process_group_is_batchnorm(momentum):
    bn = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    global_bn = GlobalBatchNorm.from_batchnorm(nn.BatchNorm2d(3, momentum=momentum))
    global_bn.load_state_dict(bn.state_dict())
    assert list(global_bn.state_dict()) == list(bn.state_dict())
    for train in (True, True, False):
        bn.train(train), global_bn.train(train)
        x = torch.randn(4, 3, 5, 5)
        torch.testing.assert_close(global_bn(x), bn(x), rtol=0, atol=0)
        for actual, expected in zip(global_bn.buffers(), bn.buffers()):
            torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_sync_batchnorm_on_cpu_keeps_parameters_and_checkpoints():
    plain = _encoder()
    model = sync_batchnorm(_encoder(), "cpu")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, GlobalBatchNorm) for m in norms)
    assert list(model.state_dict()) == list(plain.state_dict())
    model.load_state_dict(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in plain.parameters()]


def test_rank_slice():
    assert rank_slice(8, None) == slice(0, 8)
    assert [rank_slice(8, DistributedEnv(r, 2, r)) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    with pytest.raises(ValueError, match="global batch size 7 is not divisible by the number of processes 2"):
        rank_slice(7, DistributedEnv(0, 2, 0))


def test_environment_outside_and_under_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert DistributedEnv.from_environment() is None and is_writer()
    assert init_process_group("cpu") is None
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, None, "cpu") is model
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x and gather(x) is x
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert DistributedEnv.from_environment() == DistributedEnv(rank=1, world_size=2, local_rank=1)
    assert not is_writer() and is_writer(DistributedEnv(0, 2, 0))


def test_a_two_process_run_is_trained_by_both_and_stored_once(tiny_specs, tmp_path):
    """`run --nproc 2` on the CPU: two gloo processes train the run, rank 0 alone reports and stores it; the same
    command again trains nothing."""
    import subprocess
    import sys

    from aunce_bench.results import ResultStore

    method, db = tiny_specs / "tiny_one_epoch_aunce.yaml", tmp_path / "r.sqlite"
    command = [sys.executable, "-m", "aunce_bench.cli", "run", "--method", str(method), "--protocol",
               str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1", "--nproc", "2", "--db", str(db)]
    first = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("1 done, 0 failed, 0 skipped of 1 run(s)") == 1  # rank 1 prints nothing
    (stored,) = ResultStore(db).runs()
    assert stored["status"] == "done" and stored["provenance"]["execution"]["processes"] == 2
    assert stored["provenance"]["training"]["pretrain_first_loss"] > 0
    again = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert again.returncode == 0 and "0 done, 0 failed, 1 skipped of 1 run(s)" in again.stdout
    assert len(ResultStore(db).runs()) == 1


def test_nproc_refuses_a_batch_size_the_processes_cannot_share(tiny_specs, tmp_path):
    from typer.testing import CliRunner

    from aunce_bench.cli import app

    method = tmp_path / "m.yaml"
    method.write_text((tiny_specs / "tiny_one_epoch_aunce.yaml").read_text().replace("batch_size: 32",
                                                                                     "batch_size: 33"))
    result = CliRunner().invoke(app, ["run", "--method", str(method), "--protocol", "synth_bp4d_3fold", "--quick",
                                      "--nproc", "2", "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2
    assert "field 'train.batch_size': 33 is not a multiple of --nproc 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
