"""How training batches are drawn: shuffled (every frame once an epoch) or by the `rare_au` sampler, a declared
variant; its weights against a hand computation, its batches against the shares it promises, and its place in
the run id."""

import numpy as np
import pytest
import torch

from aunce_bench.data.loaders import ShuffledBatches, WeightedBatches, batch_positive_share, rare_au_weights
from aunce_bench.errors import UserError
from aunce_bench.protocols import parse_noise, plan_runs
from aunce_bench.specs import load_method, load_protocol

# 10 frames x 3 AUs: AU A in 5 frames, B in 2, C in 1 (unknown in one), 3 frames with none present
LABELS = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1],
                   [0, 1, 0], [0, 0, -1], [0, 0, 0], [0, 0, 0], [-1, 0, 0]], dtype=np.int8)


def test_each_frame_weighs_the_inverse_base_rate_of_its_rarest_present_au():
    # base rates over all frames: A 5/10, B 2/10, C 1/10; frames with none present: 4 of 10 (rows 6-9)
    assert rare_au_weights(LABELS).tolist() == pytest.approx([2, 2, 2, 5, 10, 5, 2.5, 2.5, 2.5, 2.5])


def test_weighted_batches_hold_the_shares_the_sampler_promises():
    labels = (np.random.default_rng(0).random((400, 4)) < [0.4, 0.2, 0.05, 0.02]).astype(np.int8)
    batches = WeightedBatches(rare_au_weights(labels), 32, torch.Generator().manual_seed(0))
    drawn = np.concatenate([batch.numpy() for _ in range(50) for batch in batches])
    assert len(batches) == 400 // 32 and len(drawn) == 50 * 12 * 32
    observed = (labels[drawn] == 1).mean(axis=0)
    assert observed == pytest.approx(batch_positive_share(labels, "rare_au"), abs=0.015)
    shuffled = batch_positive_share(labels, "shuffle")
    assert shuffled == pytest.approx((labels == 1).mean(axis=0))
    assert (batch_positive_share(labels, "rare_au")[2:] > 3 * shuffled[2:]).all()  # the rare AUs fill batches


def test_each_rank_takes_its_slice_of_the_same_global_batch():
    class Ranks:  # two processes
        rank, world_size = 0, 2

    weights = rare_au_weights(LABELS)
    global_batches = list(WeightedBatches(weights, 4, torch.Generator().manual_seed(3)))
    halves = []
    for rank in (0, 1):
        Ranks.rank = rank
        halves.append(list(WeightedBatches(weights, 4, torch.Generator().manual_seed(3), ranks=Ranks)))
    for whole, first, second in zip(global_batches, *halves):
        assert torch.cat([first, second]).tolist() == whole.tolist()
    assert len(ShuffledBatches(10, 4, torch.Generator())) == len(global_batches)  # same epoch length


def first_run(method, tmp_path, extra: str = ""):
    path = tmp_path / f"{method}.yaml"
    path.write_text(f"name: {method}\ninclude: aunce\n{extra}")
    return plan_runs(load_method(str(path)), load_protocol("synth_bp4d_3fold"), "quick", [1], [0],
                     parse_noise("none"))[0]


def test_the_sampler_joins_the_run_id_only_when_it_is_not_shuffling(tmp_path):
    unset = first_run("a", tmp_path)
    assert first_run("a", tmp_path, "train: {sampler: shuffle}\n").run_id == unset.run_id
    rare = first_run("a", tmp_path, "train: {sampler: rare_au}\n")
    assert rare.run_id != unset.run_id and rare.method.train.sampler == "rare_au"
    assert load_method("aunce_rareau").train.sampler == "rare_au"
    assert load_method("wce_rareau").train.sampler == "rare_au"


def test_a_sampler_on_the_probe_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"probe\.sampler: the linear probe draws shuffled batches .*set the "
                                        r"sampler under train"):
        first_run("a", tmp_path, "probe: {sampler: rare_au}\n")


def test_a_rare_au_run_trains_and_stores_its_sampler(tiny_specs, tmp_path):
    method = "tiny_one_epoch_aunce"  # contrastive pretraining; every trainer draws through `training_batches`
    from aunce_bench.launch import execute_run
    from aunce_bench.results import ResultStore
    from aunce_bench.training.common import Progress

    text = (tiny_specs / f"{method}.yaml").read_text().replace("batch_size: 32", "batch_size: 32, sampler: rare_au", 1)
    (tmp_path / f"{method}.yaml").write_text(text)
    run = plan_runs(load_method(str(tmp_path / f"{method}.yaml")), load_protocol(str(tiny_specs / "tiny_easy.yaml")),
                    "quick", [1], [0], parse_noise("none"))[0]
    store = ResultStore(tmp_path / "results.sqlite")
    assert execute_run(run, store, torch.device("cpu"), Progress()).status == "done"
    assert store.runs()[0]["spec"]["method"]["train"]["sampler"] == "rare_au"
