"""Protocols on prepared real datasets: the published folds, pinned subject lists, the data root and its
errors, partial datasets, budgets, and `prepare` then `run` end to end through the CLI."""

import json
import shutil

import datasets
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.index import is_complete
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.prepare import prepare
from aunce_bench.errors import UserError
from aunce_bench.launch import run_frames
from aunce_bench.protocols import fold_plans, plan_runs
from aunce_bench.specs import BUILTIN, load_method, load_protocol
from rawdata import write_affwild2, write_bp4d, write_disfa, write_fera17

runner = CliRunner()
BP4D_PARTS = [
    "F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008".split(),
    "M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005".split(),
    "F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014".split(),
]
DISFA_PARTS = [
    "SN002 SN010 SN001 SN026 SN027 SN032 SN030 SN009 SN016".split(),
    "SN013 SN018 SN011 SN028 SN012 SN006 SN031 SN021 SN024".split(),
    "SN003 SN029 SN023 SN025 SN008 SN005 SN007 SN017 SN004".split(),
]
TINY_WCE = """\
name: tiny_wce
recipe: supervised
model: {backbone: resnet18, graph: true, dim: 32, init: scratch}
loss: {name: wce}
train: {optimizer: adamw, lr: 1.0e-3, batch_size: 16, epochs: 1}
"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Raw trees: BP4D (all 41 subjects, 2 tasks x 3 frames) and DISFA (all 27 subjects, 4 frames)."""
    folder = tmp_path_factory.mktemp("raw")
    write_bp4d(folder / "BP4D", sorted(s for part in BP4D_PARTS for s in part), tasks=2, frames=3)
    write_disfa(folder / "DISFA", sorted(s for part in DISFA_PARTS for s in part), frames=4)
    return folder


@pytest.fixture(scope="module")
def root(raw, tmp_path_factory):
    """A data root with bp4d and disfa prepared."""
    folder = tmp_path_factory.mktemp("data")
    prepare("bp4d", raw / "BP4D", data_root=folder, align=False, workers=1)
    prepare("disfa", raw / "DISFA", data_root=folder, align=False, workers=1)
    return folder


def test_published_folds_test_part3_part2_part1(root):
    for name, parts in (("bp4d_3fold", BP4D_PARTS), ("disfa_3fold", DISFA_PARTS)):
        plans = fold_plans(load_protocol(name), "quick", root)
        assert [p.name for p in plans] == ["fold1", "fold2", "fold3"]
        assert [p.test_subjects for p in plans] == [parts[2], parts[1], parts[0]]
        for plan in plans:
            assert sorted(plan.train_subjects) == sorted(s for part in parts if part != plan.test_subjects for s in part)
    bp4d = fold_plans(load_protocol("bp4d_3fold"), "full", root)[0]
    assert bp4d.aus == [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    assert bp4d.train_data.frame_stride == 1 and bp4d.train_data.image_size == 256
    assert load_protocol("bp4d_3fold").reference.same_setting is True


def test_edited_subject_lists_fail_against_their_pinned_hash(tmp_path):
    text = (BUILTIN / "protocols" / "bp4d_3fold.yaml").read_text()
    edited = tmp_path / "edited.yaml"
    edited.write_text(text.replace("[F001, M007,", "[F007, M007,").replace("[F007, F015,", "[F001, F015,"))
    with pytest.raises(UserError, match=r"edited.yaml: field 'split.parts.*do not match their pinned sha256"):
        load_protocol(str(edited))
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", str(edited), "--quick"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "sha256" in result.stderr


def test_missing_dataset_error_names_the_dataset_the_folder_and_the_command(tmp_path):
    empty = tmp_path / "empty"
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "bp4d_3fold", "--quick", "--data-root",
                                 str(empty), "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"dataset bp4d is not prepared: no {empty / 'bp4d'} under the data root {empty}" in result.stderr
    assert f"aunce-bench prepare bp4d --root /path/to/BP4D --data-root {empty}" in result.stderr
    cross = runner.invoke(app, ["run", "--method", "wce", "--protocol", "cross_dataset", "--quick"])
    assert cross.exit_code == 2 and "no-data/bp4d" in cross.stderr  # $AUNCE_BENCH_DATA (conftest) is the default


def test_data_root_from_the_environment(root, monkeypatch):
    monkeypatch.setenv("AUNCE_BENCH_DATA", str(root))
    plans = fold_plans(load_protocol("cross_dataset"), "quick")
    assert [p.name for p in plans] == ["bp4d_to_disfa", "disfa_to_bp4d"]
    assert all(p.aus == [1, 2, 4, 6, 12] for p in plans)
    assert len(plans[0].train_subjects) == 41 and len(plans[0].test_subjects) == 27


def test_interrupted_prepare_is_never_used_as_complete(raw, tmp_path, monkeypatch):
    data = tmp_path / "data"

    def interrupted(self, path, *args, **kwargs):
        original(self.select(range(3)), path, *args, **kwargs)  # something is written, then the process dies
        raise KeyboardInterrupt

    original = datasets.Dataset.save_to_disk
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("bp4d", raw / "BP4D", data_root=data, align=False, workers=1)
    monkeypatch.undo()
    assert not (data / "bp4d").exists() and [p.name for p in data.iterdir()] == ["bp4d.lock"]  # no staging folder
    with pytest.raises(UserError, match=r"dataset bp4d is not prepared"):
        fold_plans(load_protocol("bp4d_3fold"), "quick", data)

    prepare("bp4d", raw / "BP4D", data_root=data, align=False, workers=1)
    (data / "bp4d" / "frame_index.json").unlink()  # a copy without its completion marker
    assert not is_complete(data / "bp4d")
    with pytest.raises(UserError, match=r"dataset bp4d at .*/bp4d is incomplete .* --force$"):
        fold_plans(load_protocol("bp4d_3fold"), "quick", data)
    with pytest.raises(UserError, match=r"exists and is not a prepared dataset; pass --force"):
        prepare("bp4d", raw / "BP4D", data_root=data, align=False, workers=1)
    prepare("bp4d", raw / "BP4D", data_root=data, align=False, workers=1, force=True)
    assert len(fold_plans(load_protocol("bp4d_3fold"), "quick", data)) == 3


def test_budgets_of_real_protocols(root, tmp_path):
    broken = tmp_path / "no_full.yaml"
    broken.write_text((BUILTIN / "protocols" / "disfa_3fold.yaml").read_text().split("  full:")[0])
    with pytest.raises(UserError, match=r"no_full.yaml: .*budgets: missing full \(a protocol on prepared data "
                                        r"defines quick, full\)"):
        load_protocol(str(broken))
    assert load_protocol("bp4d_3fold").default_budget == "full"
    assert load_protocol("synth_bp4d_3fold").default_budget == "standard"
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "bp4d_3fold", "--budget", "standard",
                                 "--data-root", str(root)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "protocol bp4d_3fold has no 'standard' budget; choose one of: quick, full" in result.stderr


def test_quick_budget_subsamples_sequences_and_resizes(root):
    run = plan_runs(load_method("wce"), load_protocol("bp4d_3fold"), "quick", [1], [0], NoiseSpec.parse("none"),
                    root)[0]
    assert run.train_data.frame_stride == 40 and run.train_data.image_size == 64
    assert run.test_data.dataset == "bp4d" and len(run.data_fingerprint) == 20
    test = run_frames(run.test_data, run.test_subjects, run.aus, root)
    assert tuple(test.read([0]).shape[1:]) == (3, 64, 64)
    assert len(test) == 13 * 2  # 13 test subjects x 2 sequences, the first of every 40 frames of each
    assert set(test.keys["frame"]) == {2440}
    published = plan_runs(load_method("wce"), load_protocol("bp4d_3fold"), "quick", [1], [0],
                          NoiseSpec.parse("none"), root, selection="test_fold")[0]
    assert published.selection == "test_fold" and published.run_id != run.run_id


def test_disfa_protocol_threshold_relabels_from_intensities(root):
    runs = {}
    for threshold in (1.0, 2.0):
        protocol = load_protocol("disfa_3fold").model_copy(update={"occurrence_threshold": threshold})
        runs[threshold] = plan_runs(load_method("wce"), protocol, "full", [1], [0], NoiseSpec.parse("none"), root)[0]
    frames = {t: run_frames(r.test_data, r.test_subjects, r.aus, root) for t, r in runs.items()}
    assert (frames[1.0].labels >= frames[2.0].labels).all() and (frames[1.0].labels != frames[2.0].labels).any()
    assert runs[1.0].run_id != runs[2.0].run_id


def test_partition_protocols_use_the_official_split_and_views(tmp_path):
    data = tmp_path / "data"
    write_affwild2(tmp_path / "Aff-Wild2")
    prepare("affwild2", tmp_path / "Aff-Wild2", data_root=data, align=False, workers=1)
    plan = fold_plans(load_protocol("affwild2"), "quick", data)[0]
    assert (plan.name, plan.train_subjects, plan.test_subjects) == ("validation", ["vid1"], ["vid2_left"])
    assert plan.aus == [1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26]

    write_fera17(tmp_path / "FERA17")
    prepare("fera17", tmp_path / "FERA17", data_root=data, align=False, workers=1)
    plan = fold_plans(load_protocol("fera17_pose"), "full", data)[0]
    assert plan.train_subjects == ["TR_F001"] and plan.test_subjects == ["VA_F001"]
    assert plan.train_data.pose_bins == ["view6"] and plan.test_data.pose_bins is None
    train = run_frames(plan.train_data, plan.train_subjects, plan.aus, data)
    assert set(train.keys["pose_bin"]) == {"view6"} and len(train) == 4  # the frontal view only, not view1
    wrong = load_protocol("fera17_pose").model_copy(update={"data": load_protocol("fera17_pose").data.model_copy(
        update={"overrides": {"pose_bins": ["view9"]}})})
    with pytest.raises(UserError, match=r"pose bin 'view9' is not in fera17 .*\(it has: view1, view6\)"):
        fold_plans(wrong, "full", data)


def test_prepare_then_run_end_to_end_through_the_cli(raw, tmp_path):
    data, db, method = tmp_path / "ROOT", tmp_path / "results.sqlite", tmp_path / "tiny_wce.yaml"
    method.write_text(TINY_WCE)
    prepared = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw / "BP4D"), "--no-align", "--out",
                                   str(data / "bp4d")])
    assert prepared.exit_code == 0, prepared.output
    printed = " ".join(prepared.output.split())
    assert "bp4d: 246 frames, 41 subjects, 82 sequences" in printed and "wrote 246 frames" in printed
    again = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw / "BP4D"), "--no-align", "--out",
                                str(data / "bp4d")])
    assert again.exit_code == 0 and "already prepared" in again.output
    result = runner.invoke(app, ["run", "--method", str(method), "--protocol", "bp4d_3fold", "--quick", "--folds", "1",
                                 "--data-root", str(data), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "tiny_wce on bp4d_3fold (quick budget)" in result.output
    stored = json.loads(runner.invoke(app, ["results", "--db", str(db)]).output)
    assert len(stored) == 1 and stored[0]["status"] == "done" and stored[0]["dataset"] == "bp4d"
    assert len(stored[0]["per_au_f1"]) == 12 and 0 <= stored[0]["mean_f1"] <= 1
    shutil.rmtree(data / "bp4d")
    gone = runner.invoke(app, ["run", "--method", str(method), "--protocol", "bp4d_3fold", "--quick", "--folds", "1",
                               "--data-root", str(data), "--db", str(db)])
    assert gone.exit_code == 2 and "aunce-bench prepare bp4d" in gone.stderr
