"""Controlled studies: planning (every point paired with the reference in its own setting) and the table read back
from the store, checked against an independent computation on hand-made predictions."""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.errors import UserError
from aunce_bench.results import ResultStore
from aunce_bench.study import load_study, plan_study, study_table, unique_runs
from test_report import informed, store_synthetic_run

runner = CliRunner()

STUDY = {
    "name": "small", "protocol": "synth_bp4d_3fold", "budget": "quick", "folds": [1, 2], "seeds": [0],
    "reference": "wce", "focus_aus": [15, 23, 24],
    "factors": {"views": [{"method": "aunce"}, {"method": "aunce_cropflip"}],
                "init": [{"method": "aunce", "init": "scratch"}]},
}


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    return path


def test_every_point_is_paired_with_the_reference_in_its_own_setting(study_file):
    points = plan_study(load_study(str(study_file)))
    assert [(p.factor, p.point.label) for p in points] == [
        ("views", "aunce"), ("views", "aunce_cropflip"), ("init", "aunce (init scratch)")]
    for planned in points:
        assert [(r.fold, r.seed) for r in planned.runs] == [(1, 0), (2, 0)]
        assert {r.method.name for r in planned.reference_runs} == {"wce"}
        assert {r.init for r in planned.reference_runs} == {r.init for r in planned.runs}
    # the two default-init points share their reference runs: planned once
    runs = unique_runs(points)
    assert len(runs) == len({r.run_id for r in runs}) == 2 * 5
    assert points[0].runs[0].run_id != points[1].runs[0].run_id  # the views variant is another run


def blind_to_lips(run, labels):
    """`informed`, except that AU23 is never predicted."""
    probabilities = informed(run, labels)
    probabilities[:, run.aus.index(23)] = 0.0
    return probabilities


def test_the_table_pairs_each_point_with_its_reference_and_splits_focus_and_other_aus(study_file, tmp_path):
    study = load_study(str(study_file))
    points = plan_study(study)[:1]  # aunce against wce, synthface init
    db = tmp_path / "results.sqlite"
    with ResultStore(db) as store:
        for run in points[0].reference_runs:
            store_synthetic_run(store, run, 0.0, predict=informed)
        for run in points[0].runs:
            store_synthetic_run(store, run, 0.0, predict=blind_to_lips)
        (row,) = study_table(study, points, store, resamples=200)
        runs = {r["run_id"]: r for r in store.runs(status="done")}
    assert row.runs == 2
    # independent: per run, the mean F1 over the focus AUs and over the others, averaged over the two folds
    point = [runs[r.run_id]["per_au_f1"] for r in points[0].runs]
    reference = [runs[r.run_id]["per_au_f1"] for r in points[0].reference_runs]
    focus = ["AU15", "AU23", "AU24"]
    others = [au for au in point[0] if au not in focus]
    assert row.focus_f1 == pytest.approx(np.mean([np.mean([f1[au] for au in focus]) for f1 in point]))
    assert row.other_f1 == pytest.approx(np.mean([np.mean([f1[au] for au in others]) for f1 in point]))
    assert row.reference_f1 == pytest.approx(np.mean([np.mean(list(f1.values())) for f1 in reference]))
    # AU23 never predicted: the focus AUs lose a third of AU23's F1, the others are the same predictions
    au23 = np.mean([f1["AU23"] for f1 in reference])
    assert row.versus["focus"].difference == pytest.approx(-au23 / 3)
    assert row.versus["focus"].high < 0
    assert row.versus["other"].difference == row.versus["other"].low == row.versus["other"].high == 0.0
    assert row.versus["mean"].difference == pytest.approx(row.mean_f1 - row.reference_f1)


def test_the_study_command_prints_the_table_and_writes_the_page(study_file, tmp_path):
    study = load_study(str(study_file))
    points = plan_study(study)
    db = tmp_path / "results.sqlite"
    with ResultStore(db) as store:
        for planned in points[:1]:
            for run in [*planned.reference_runs, *planned.runs]:
                store_synthetic_run(store, run, 0.0, predict=informed)
    page = tmp_path / "STUDY.md"
    result = runner.invoke(app, ["study", str(study_file), "--db", str(db), "--no-run", "--page", str(page),
                                 "--identities", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "aunce_cropflip" in result.output and "0 of 2 runs" in result.output  # a point not run yet says so
    text = page.read_text()
    assert f"aunce-bench study {study_file}" in text  # the command that reproduces it
    assert "| views | aunce | 2 |" in text


def test_bad_studies_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown study 'lip_au'"):
        load_study("lip_au")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**STUDY, "budget": "huge"}, sort_keys=False))
    with pytest.raises(UserError, match="broken.yaml.*budget"):
        load_study(str(broken))
    result = runner.invoke(app, ["study", str(broken), "--no-run"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    result = runner.invoke(app, ["study", str(tmp_path), "--no-run"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path} is a folder, not a study file; pass a study name (lip_aus) or the "
                             "path of a study YAML file\n")


def test_the_page_shows_each_aus_share_of_positives_per_batch_under_each_sampler(tiny_specs, tmp_path):
    from aunce_bench.data.loaders import batch_positive_share
    from aunce_bench.launch import run_frames

    study = {"name": "tiny", "protocol": str(tiny_specs / "tiny_easy.yaml"), "budget": "quick", "folds": [1],
             "seeds": [0], "reference": str(tiny_specs / "tiny_fast_wce.yaml"), "focus_aus": [4],
             "factors": {"batches": [{"method": str(tiny_specs / "tiny_fast_wce.yaml")}]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    page = tmp_path / "STUDY.md"
    result = runner.invoke(app, ["study", str(path), "--db", str(tmp_path / "r.sqlite"), "--no-run", "--page",
                                 str(page), "--identities", "3"])
    assert result.exit_code == 0, result.output
    section = page.read_text().split("## Batch composition")[1].split("##")[0]
    run = plan_study(load_study(str(path)))[0].runs[0]
    labels = run_frames(run.train_data, run.train_subjects, run.aus, tmp_path).labels
    for k, au in enumerate(run.aus):  # the shares of the fold's own training labels, as the sampler draws them
        shuffled, rare = ((labels == 1).mean(axis=0)[k], batch_positive_share(labels, "rare_au")[k])
        assert f"| AU{au} | {shuffled:.3f} | {rare:.3f} |" in section


def test_a_resolution_point_renders_larger_faces_for_the_point_and_its_reference(tmp_path):
    study = {**STUDY, "factors": {"resolution": [{"method": "aunce"}, {"method": "aunce", "image_size": 96}]}}
    path = tmp_path / "resolution.yaml"
    path.write_text(yaml.safe_dump(study))
    base, larger = plan_study(load_study(str(path)))
    assert larger.point.label == "aunce (96 px)"
    for run in [*larger.runs, *larger.reference_runs]:  # 56 px crops of 64 px faces become 84 of 96
        assert (run.train_data.image_size, run.test_data.image_size, run.crop_size) == (96, 96, 84)
    assert {r.crop_size for r in base.runs} == {56}
    assert not {r.run_id for r in base.runs} & {r.run_id for r in larger.runs}
    assert larger.runs[0].data_fingerprint != base.runs[0].data_fingerprint  # kept apart on leaderboards
