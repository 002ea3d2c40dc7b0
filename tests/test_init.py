"""Backbone initialisation: resolved into the run id, loaded from checkpoints and timm's hub cache without a
network, a clear error when ImageNet weights cannot be had, and SynthFace: its objective learns, its pool
shares no identity with any protocol, and a cold cache is built once."""

import hashlib
import json
import multiprocessing
import time
from dataclasses import astuple

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from aunce_bench import synthface
from aunce_bench.cli import app
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.synth.generate import identity_for
from aunce_bench.errors import UserError
from aunce_bench.models.backbones import create_backbone
from aunce_bench.models.init import load_backbone
from aunce_bench.paths import work_folder
from aunce_bench.protocols import fold_plans, plan_runs
from aunce_bench.report.aggregate import run_key
from aunce_bench.specs import Init, list_protocols, load_method, load_protocol

runner = CliRunner()
CLEAN = NoiseSpec.parse("none")
TINY_SYNTHFACE = dict(identities_per_profile=2, sequences=1, frames_per_sequence=120, frame_stride=6, epochs=4,
                      batch_size=16, lr=3e-3)


def tiny_synthface(backbone="resnet18", crop_size=40, objective="landmarks", **changes):
    return synthface.SynthFaceConfig(backbone=backbone, crop_size=crop_size, objective=objective,
                                     **{**TINY_SYNTHFACE, **changes})


def first_run(specs, method="tiny_wce", init=None, protocol="tiny_easy"):
    return plan_runs(load_method(str(specs / f"{method}.yaml")), load_protocol(str(specs / f"{protocol}.yaml")),
                     "quick", [1], [0], CLEAN, init=init)[0]


# ------------------------------------------------------------------------------------------ the run id
def test_init_enters_the_run_id_and_is_resolved_by_precedence(tiny_specs, tmp_path):
    weights = tmp_path / "backbone.pth"
    torch.save(create_backbone("resnet18").model.state_dict(), weights)
    from_budget = first_run(tiny_specs)  # the tiny protocol's budgets say init: scratch
    assert str(from_budget.init) == "scratch" and from_budget.init_hash is None
    synth, imagenet = first_run(tiny_specs, init="synthface"), first_run(tiny_specs, init="imagenet")
    checkpoint = first_run(tiny_specs, init=f"checkpoint:{weights}")
    assert imagenet.init_hash == "timm:resnet18.a1_in1k"
    assert synth.init_hash.startswith("synthface:")
    assert str(checkpoint.init) == f"checkpoint:{weights}"
    assert checkpoint.init_hash == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert len({run.run_id for run in (from_budget, synth, imagenet, checkpoint)}) == 4
    torch.save({k: v + 1 for k, v in torch.load(weights).items()}, weights)  # other weights, same path
    assert first_run(tiny_specs, init=f"checkpoint:{weights}").run_id != checkpoint.run_id

    # the method's YAML beats the budget, the command line beats both; budgets without one use DEFAULT_INIT
    yaml_init = tmp_path / "m.yaml"
    yaml_init.write_text((tiny_specs / "tiny_wce.yaml").read_text().replace("dim: 64}", "dim: 64, init: imagenet}"))
    planned = plan_runs(load_method(str(yaml_init)), load_protocol(str(tiny_specs / "tiny_easy.yaml")), "quick",
                        [1], [0], CLEAN)[0]
    assert str(planned.init) == "imagenet"
    assert plan_runs(load_method(str(yaml_init)), load_protocol(str(tiny_specs / "tiny_easy.yaml")), "quick", [1],
                     [0], CLEAN, init="scratch")[0].run_id == from_budget.run_id
    defaults = {budget: str(plan_runs(load_method("wce"), load_protocol("synth_bp4d_3fold"), budget, [1], [0],
                                      CLEAN)[0].init) for budget in ("quick", "standard", "full")}
    assert defaults == {"quick": "synthface", "standard": "synthface", "full": "imagenet"}


def test_bad_inits_fail_at_planning_with_one_line(tiny_specs, tmp_path):
    method, protocol = str(tiny_specs / "tiny_wce.yaml"), str(tiny_specs / "tiny_easy.yaml")
    for init, message in (("imagenet21k", "invalid --init: unknown init 'imagenet21k'"),
                          ("checkpoint:", "invalid --init: checkpoint needs a path"),
                          (f"checkpoint:{tmp_path / 'absent.pth'}", "checkpoint file")):
        result = runner.invoke(app, ["run", "--method", method, "--protocol", protocol, "--quick", "--init", init,
                                     "--db", str(tmp_path / "r.sqlite")])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text((tiny_specs / "tiny_wce.yaml").read_text().replace("dim: 64}", "dim: 64, init: imagenett}"))
    result = runner.invoke(app, ["run", "--method", str(bad_yaml), "--protocol", protocol, "--quick"])
    assert result.exit_code == 2 and "field 'model.init'" in result.stderr


# --------------------------------------------------------------------------------- loading weights
def test_checkpoint_init_loads_the_file_and_records_its_hash(tmp_path):
    source = create_backbone("resnet18").model.state_dict()
    path = tmp_path / "weights.pth"
    torch.save(source, path)
    backbone, provenance = load_backbone("resnet18", Init.parse(f"checkpoint:{path}"), 56)
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert provenance["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_is_not_a_state_dict_is_named_with_how_to_save_one(tiny_specs, tmp_path):
    advice = "pass a file saved with torch.save(model.state_dict(), PATH), or a .safetensors file"
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n" * 200)
    result = runner.invoke(app, ["run", "--method", str(tiny_specs / "tiny_wce.yaml"), "--protocol",
                                 str(tiny_specs / "tiny_easy.yaml"), "--quick", "--init", f"checkpoint:{notes}",
                                 "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2
    assert result.stderr == (f"error: invalid init: {notes} is not a PyTorch checkpoint (state dict) file: neither "
                             f"the zip archive nor the pickle that torch.save writes; {advice}\n")
    whole = tmp_path / "model.pth"
    torch.save(create_backbone("test_resnet").model, whole)
    with pytest.raises(UserError) as error:
        load_backbone("test_resnet", Init.parse(f"checkpoint:{whole}"), 64)
    assert str(error.value) == (f"invalid init: {whole} is not a PyTorch checkpoint (state dict) file: it holds "
                                f"objects other than tensors (a whole model?); {advice}")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache in offline mode: timm's loader finds only what a test places there."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def place_hub_weights(cache) -> dict:
    """Random test_resnet weights placed where timm's loader looks (the hub cache layout); the state dict."""
    state = {key: torch.randn_like(value) if value.is_floating_point() else value
             for key, value in create_backbone("test_resnet").model.state_dict().items()}
    repo, revision = cache / "models--timm--test_resnet.r160_in1k", "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file(state, str(repo / "snapshots" / revision / "model.safetensors"))
    return state


def test_imagenet_init_loads_timm_weights_from_the_hub_cache_offline(offline_hub):
    """A state dict placed where timm's loader looks (the hub cache layout) is what `imagenet` loads."""
    state = place_hub_weights(offline_hub)
    backbone, provenance = load_backbone("test_resnet", Init.parse("imagenet"), 64)
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert provenance["source"] == "test_resnet.r160_in1k"


def test_imagenet_init_without_network_or_cache_says_where_it_looked(offline_hub, tiny_specs, tmp_path):
    with pytest.raises(UserError) as error:
        load_backbone("test_resnet", Init.parse("imagenet"), 64)
    message = str(error.value)
    assert "test_resnet" in message and str(offline_hub / "models--timm--test_resnet.r160_in1k") in message
    assert "--init checkpoint:PATH" in message and "\n" not in message
    result = runner.invoke(app, ["run", "--method", str(tiny_specs / "tiny_wce.yaml"), "--protocol",
                                 str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1", "--init", "imagenet",
                                 "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 1 and "cannot load ImageNet weights for backbone resnet18" in result.stderr
    assert "Traceback" not in result.stderr and "1 of 1 run(s) failed" in result.stderr, result.stderr
    stored = json.loads(runner.invoke(app, ["results", "--db", str(tmp_path / "r.sqlite")]).output)
    assert [run["status"] for run in stored] == ["failed"]


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """An empty hub cache, not set offline, whose hub does not answer: its session's requests raise at once."""
    import huggingface_hub
    from huggingface_hub import constants

    class NoNetwork:
        def head(self, url, **options):
            raise OSError("[Errno -2] Name or service not known")

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", NoNetwork)
    return cache


def test_imagenet_init_without_network_fails_fast_or_loads_the_cached_copy(unreachable_hub):
    """One request tells the hub is out of reach; then timm only looks in the cache (no retries for a minute)."""
    from huggingface_hub import constants

    started = time.perf_counter()
    with pytest.raises(UserError) as error:
        load_backbone("test_resnet", Init.parse("imagenet"), 64)
    assert time.perf_counter() - started < 5
    assert str(error.value) == (
        "cannot load ImageNet weights for backbone test_resnet: https://huggingface.co does not answer (OSError: "
        f"[Errno -2] Name or service not known), and no cached copy in {unreachable_hub}/models--timm--test_resnet."
        "r160_in1k; connect once so that timm can download them, or pass --init checkpoint:PATH with a local state "
        "dict")
    state = place_hub_weights(unreachable_hub)
    backbone, _ = load_backbone("test_resnet", Init.parse("imagenet"), 64)
    assert all(torch.equal(value, state[key]) for key, value in backbone.model.state_dict().items())
    assert constants.HF_HUB_OFFLINE is False  # offline only while loading


def test_input_normalisation_comes_from_the_weights_config():
    vit = create_backbone("test_vit")  # timm's test ViT is configured with mean = std = 0.5
    resnet = create_backbone("resnet18")
    assert vit.normalisation == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resnet.normalisation == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# -------------------------------------------------------------------------------------------- SynthFace
@pytest.mark.parametrize("objective, epochs", [("landmarks", 4), ("simclr", 10)])
def test_synthface_objective_loss_falls_on_a_tiny_pool(objective, epochs):
    config = tiny_synthface(objective=objective, epochs=epochs)
    synthface.synthface_root().mkdir(parents=True, exist_ok=True)
    killed_build = work_folder(synthface.synthface_root() / config.name, "partial")  # as a killed build leaves it
    folder, built = synthface.ensure_synthface(config)
    assert not killed_build.exists()
    card = json.loads((folder / synthface.CARD_FILE).read_text())
    assert built and card["objective"] == objective and card["uses_au_labels"] is False
    assert card["losses"]["final_epoch"] < 0.9 * card["losses"]["first_epoch"], card["losses"]
    assert card["pool"]["frames"] == 2 * 2 * 20 and card["pool"]["seed"] == synthface.POOL_SEED
    assert card["weights_sha256"] == hashlib.sha256((folder / synthface.WEIGHTS_FILE).read_bytes()).hexdigest()
    assert synthface.ensure_synthface(config) == (folder, False)


def test_synthface_pool_shares_no_identity_with_any_protocol():
    pool = {astuple(identity_for(config, subject))
            for config in synthface.SynthFaceConfig(identities_per_profile=200).pool_configs()
            for subject in range(config.subjects)}
    checked = 0
    for name in list_protocols():
        protocol = load_protocol(name)
        if not protocol.synthetic:
            continue
        for budget in protocol.budgets:
            for plan in fold_plans(protocol, budget):
                for data in (plan.train_data, plan.test_data):
                    assert data.seed != synthface.POOL_SEED
                    for subject in range(data.subjects):
                        assert astuple(identity_for(data, subject)) not in pool, (name, budget, subject)
                        checked += 1
    assert checked > 1000


def test_a_protocol_rendering_the_pool_seed_refuses_synthface(tiny_specs, tmp_path):
    text = (tiny_specs / "tiny_easy.yaml").read_text().replace("difficulty: 0.25", f"difficulty: 0.25, seed: "
                                                                f"{synthface.POOL_SEED}")
    (tmp_path / "pool_seed.yaml").write_text(text)
    with pytest.raises(UserError, match="SynthFace pretraining identities"):
        plan_runs(load_method("wce"), load_protocol(str(tmp_path / "pool_seed.yaml")), "quick", [1], [0], CLEAN,
                  init="synthface")
    assert plan_runs(load_method("wce"), load_protocol(str(tmp_path / "pool_seed.yaml")), "quick", [1], [0], CLEAN,
                     init="scratch")


def _build_in_child(cache: str, queue) -> None:
    import os

    os.environ["AUNCE_BENCH_CACHE"] = cache
    folder, built = synthface.ensure_synthface(tiny_synthface(objective="landmarks", epochs=2, seed=7))
    queue.put((str(folder), built))


def test_two_processes_on_a_cold_cache_build_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_build_in_child, args=(str(tmp_path / "cache"), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(built for _, built in results) == [False, True]
    assert len({folder for folder, _ in results}) == 1
    leftovers = [p.name for p in (tmp_path / "cache" / "synthface").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_synthface_init_builds_on_first_use_and_runs_end_to_end(tiny_specs, tmp_path, monkeypatch):
    monkeypatch.setattr(synthface, "synthface_config", lambda backbone, crop_size: tiny_synthface(backbone, crop_size))
    db = tmp_path / "r.sqlite"
    result = runner.invoke(app, ["run", "--method", "init_linear", "--protocol", str(tiny_specs / "tiny_easy.yaml"),
                                 "--quick", "--folds", "1", "--init", "synthface", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "budget), init synthface" in result.output and "mean AUC" in result.output and "base rates" in result.output
    stored = json.loads(runner.invoke(app, ["results", "--db", str(db)]).output)[0]
    config = tiny_synthface("resnet18", 40)
    assert stored["init"] == "synthface" and stored["init_hash"] == f"synthface:{config.content_hash()}"
    init = stored["provenance"]["init"]
    assert init["source"] == config.name and init["objective"] == "landmarks" and len(init["weights_sha256"]) == 64
    assert stored["provenance"]["training"]["images_seen"] == 0 and stored["status"] == "done"
    card = synthface.read_card(synthface.synthface_root() / config.name)
    pretraining = [h for h in stored["history"] if h["stage"] == synthface.HISTORY_STAGE]
    assert [h["loss"] for h in pretraining] == card["losses"]["per_epoch"] and len(pretraining) == config.epochs
    assert all(h["lr"] > 0 and h["images_per_s"] > 0 for h in pretraining)
    assert {h["stage"] for h in stored["history"]} == {synthface.HISTORY_STAGE, "linear probe"}
    listed = runner.invoke(app, ["init", "list"], env={"COLUMNS": "200"})  # one table row per build
    assert listed.exit_code == 0 and config.name in listed.output
    shown = runner.invoke(app, ["init", "show", config.name])
    assert shown.exit_code == 0 and json.loads(shown.output)["config_sha256"] == config.content_hash()
    assert runner.invoke(app, ["init", "show", "nothing-like-it"]).exit_code == 2


def test_leaderboards_never_pool_inits():
    def run(init, init_hash):
        spec = {"train_data": {"profile": "bp4d"}, "test_data": {"profile": "bp4d"}, "fold_name": "fold1",
                "init_hash": init_hash, "method": {"model": {"init": init}}, "decision_threshold": 0.5,
                "selection": "strict", "data_fingerprint": "0" * 20}
        return {"protocol": "p", "budget": "quick", "method": "m", "noise": "none", "spec": spec}

    settings = {run_key(run("scratch", None)), run_key(run("synthface", "synthface:" + "a" * 64)),
                run_key(run("synthface", "synthface:" + "b" * 64)), run_key(run("imagenet", "timm:resnet18.a1"))}
    assert len(settings) == 4
    legacy = run("scratch", None)
    legacy["spec"]["method"] = {"model": {}}
    assert run_key(legacy) == run_key(run("scratch", None))
