"""Specs and protocol expansion: YAML loading, validation errors, folds, run ids."""

import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.errors import UserError
from aunce_bench.protocols import fold_plans, parse_noise, plan_runs, resolved_method, split_validation
from aunce_bench.specs import BUDGETS, list_methods, list_protocols, load_method, load_protocol

CLEAN = NoiseSpec.parse("none")
runner = CliRunner()


def test_every_shipped_yaml_loads_for_every_budget():
    assert {"aunce", "wce", "wce_linear"} <= set(list_methods())
    assert {"synth_bp4d_3fold", "synth_disfa_3fold", "synth_cross_dataset", "synth_pose"} <= set(list_protocols())
    for name in list_protocols():
        protocol = load_protocol(name)
        if not protocol.synthetic:  # planned on prepared fixtures in test_real_protocols.py
            assert set(protocol.budgets) == {"quick", "full"}
            continue
        for budget in BUDGETS:
            assert fold_plans(protocol, budget)
    for name in list_methods():
        for budget in BUDGETS:
            load_method(name).for_budget(budget)


def test_budget_overrides_merge_into_the_method():
    aunce = load_method("aunce")
    full = aunce.for_budget("full")
    assert full.model.backbone == "swin_base_patch4_window7_224" and full.train.lr == 1e-5
    assert full.train.weight_decay == aunce.train.weight_decay  # untouched keys survive the merge
    assert full.loss.model_dump()["temperature"] == 0.5


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UserError, match=r"unknown method 'aunc' \(did you mean 'aunce'\?\)"):
        load_method("aunc")
    with pytest.raises(UserError, match=r"did you mean 'synth_bp4d_3fold'"):
        load_protocol("synth_bp4d_3folds")


def test_invalid_yaml_field_names_file_and_field(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((load_method("wce").model_dump_json()).replace('"lr":0.001', '"lr":"fast"'))
    with pytest.raises(UserError, match=r"broken.yaml: field 'train.lr'"):
        load_method(str(broken))
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nrecipe: supervised\nloss: {name: wce}\ntrain: {lr: 0.1, batch_size: 8, epochs: 1}\nepochz: 3\n")
    with pytest.raises(UserError, match=r"typo.yaml: field 'epochz': Extra inputs are not permitted"):
        load_method(str(typo))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: invalid YAML"):
        load_method(str(bad))


def test_kfold_is_subject_independent_and_follows_the_published_order():
    plans = fold_plans(load_protocol("synth_bp4d_3fold"), "quick")
    assert [p.name for p in plans] == ["fold1", "fold2", "fold3"]
    tested = [s for plan in plans for s in plan.test_subjects]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 41  # every subject tested exactly once
    for plan in plans:
        assert not set(plan.train_subjects) & set(plan.test_subjects)
    assert plans[0].test_subjects[-1] == "B041" and plans[2].test_subjects[0] == "B001"  # fold1 tests part 3
    assert plans[0].aus == [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]


def test_cross_dataset_and_pose_protocols():
    cross = fold_plans(load_protocol("synth_cross_dataset"), "quick")
    assert [p.name for p in cross] == ["bp4d_to_disfa", "disfa_to_bp4d"]
    assert cross[0].train_data.profile == "bp4d" and cross[0].test_data.profile == "disfa"
    assert all(p.aus == [1, 2, 4, 6, 12] for p in cross)
    pose = fold_plans(load_protocol("synth_pose"), "quick")[0]
    assert pose.train_data.pose == "frontal" and pose.test_data.pose == "bins"
    assert pose.train_data.seed == pose.test_data.seed  # same subjects, same label process


def test_validation_subjects_come_from_training_subjects():
    subjects = [f"S{i}" for i in range(20)]
    fit, val = split_validation(subjects, 0.15, fold=1)
    assert len(val) == 3 and set(fit) | set(val) == set(subjects) and not set(fit) & set(val)
    assert split_validation(subjects, 0.15, fold=1) == (fit, val)


def test_run_ids_hash_the_resolved_run():
    wce, protocol = load_method("wce"), load_protocol("synth_bp4d_3fold")
    runs = plan_runs(wce, protocol, "quick", None, [0, 1], CLEAN)
    assert len(runs) == 6 and len({r.run_id for r in runs}) == 6
    again = plan_runs(wce, protocol, "quick", None, [0, 1], CLEAN)
    assert [r.run_id for r in runs] == [r.run_id for r in again]
    noisy = plan_runs(wce, protocol, "quick", [1], [0], parse_noise("symmetric:0.2"))[0]
    assert str(noisy.noise) == "symmetric:0.2" and noisy.run_id != runs[0].run_id
    tweaked = wce.model_copy(update={"train": wce.train.model_copy(update={"weight_decay": 0.01})})
    assert plan_runs(tweaked, protocol, "quick", [1], [0], CLEAN)[0].run_id != runs[0].run_id


def test_bad_folds_and_noise_are_user_errors():
    with pytest.raises(UserError, match=r"invalid --folds: fold 4 is out of range; synth_bp4d_3fold has folds 1-3"):
        plan_runs(load_method("wce"), load_protocol("synth_bp4d_3fold"), "quick", [4], [0], CLEAN)
    with pytest.raises(UserError, match=r"invalid --noise"):
        parse_noise("symmetric")


def test_include_starts_from_another_method_and_merges_over_it(tmp_path):
    ablation = load_method("aunce_noweight")
    aunce = load_method("aunce")
    assert (ablation.loss.exponent_pos, ablation.loss.exponent_neg) == (1.0, 1.0)
    assert ablation.loss.temperature == aunce.loss.temperature and ablation.train == aunce.train
    assert ablation.budgets == aunce.budgets and ablation.reported == [] and aunce.reported
    maxpos = load_method("aunce_maxpos")
    assert all(maxpos.for_budget(b).loss.positive_probs == [1.0, 0.0, 0.0] for b in BUDGETS)
    (tmp_path / "base.yaml").write_text("name: base\nrecipe: supervised\nloss: {name: wce}\n"
                                        "train: {lr: 1.0e-3, batch_size: 8, epochs: 2}\n")
    (tmp_path / "child.yaml").write_text("name: child\ninclude: base.yaml\ntrain: {epochs: 3}\n")
    child = load_method(str(tmp_path / "child.yaml"))
    assert (child.name, child.train.epochs, child.train.batch_size) == ("child", 3, 8)


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\ninclude: a.yaml\n", "field 'include': 'a.yaml' includes this file again (a cycle)"),
    ("name: a\ninclude: no_such_method\n", "unknown method 'no_such_method'"),
    ("name: a\ninclude: [aunce]\n", "field 'include': give a method name or a YAML path"),
])
def test_a_bad_include_is_one_line(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(UserError) as error:
        load_method(str(tmp_path / "a.yaml"))
    assert message in str(error.value) and "\n" not in str(error.value)


def run_line(*options: str) -> tuple[int, str]:
    """The exit status and stderr of `aunce-bench run` with `options` (planning only: each fails before training)."""
    result = runner.invoke(app, ["run", *options])
    return result.exit_code, result.stderr


def test_a_folder_given_as_method_or_protocol_is_named_a_folder(tiny_specs):
    assert run_line("--method", str(tiny_specs), "--protocol", "tiny") == (
        2, f"error: {tiny_specs} is a folder, not a method file; pass a method name (aunce-bench list methods) or "
           "the path of a method YAML file\n")
    assert run_line("--method", "wce", "--protocol", str(tiny_specs)) == (
        2, f"error: {tiny_specs} is a folder, not a protocol file; pass a protocol name (aunce-bench list protocols) "
           "or the path of a protocol YAML file\n")


def test_a_method_yaml_names_itself_and_the_field_of_a_bad_recipe_include_or_init(tiny_specs, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    protocol = str(tiny_specs / "tiny_easy.yaml")
    base = (tiny_specs / "tiny_fast_wce.yaml").read_text()
    recipe, include, init = (tmp_path / f"{name}.yaml" for name in ("recipe", "include", "init"))
    recipe.write_text(base.replace("recipe: supervised", "recipe: supervisd"))
    include.write_text("name: child\ninclude: bsae.yaml\n")
    init.write_text(base.replace("dim: 16}", "dim: 16, init: 'checkpoint:absent.pth'}"))
    assert run_line("--method", str(recipe), "--protocol", protocol) == (
        2, f"error: {recipe}: field 'recipe': unknown recipe 'supervisd' (did you mean 'supervised'?); known: "
           "contrastive_probe, coteaching, frozen_probe, supervised, supervised_probe\n")
    assert run_line("--method", str(include), "--protocol", protocol) == (
        2, f"error: {include}: include 'bsae.yaml': no such file (looked in {tmp_path})\n")
    assert run_line("--method", str(init), "--protocol", protocol) == (
        2, f"error: {init}: field 'model.init': checkpoint file {tmp_path / 'absent.pth'} does not exist; give the "
           "path of a state dict (.pth, .pt, .bin or .safetensors)\n")


def test_a_crop_too_small_for_the_synthface_init_names_the_protocol_field(tiny_specs, tmp_path):
    protocol = tmp_path / "small_crop.yaml"
    protocol.write_text((tiny_specs / "tiny_easy.yaml").read_text().replace("crop_size: 40,\n                init: scratch}",
                                                                            "crop_size: 24}"))
    method = str(tiny_specs / "tiny_fast_wce.yaml")
    assert run_line("--method", method, "--protocol", str(protocol), "--quick") == (
        2, f"error: {protocol}: field 'budgets.quick.crop_size': 24 px is smaller than the 32 px a SynthFace init "
           "needs; use a crop_size of at least 32, or another init (e.g. --init scratch)\n")
    planned = plan_runs(load_method(method), load_protocol(str(protocol)), "quick", [1], [0], CLEAN, init="scratch")
    assert planned[0].crop_size == 24


def test_every_builtin_method_plans_at_every_budget():
    protocol = load_protocol("synth_bp4d_3fold")
    names = list_methods()
    assert len(names) >= 13
    for name in names:
        for budget in BUDGETS:
            resolved, _ = resolved_method(load_method(name), protocol, budget, "scratch")
            assert resolved.name == name
