"""Training views are a declared method field: variants switch parts of AUNCE's augmentation, ids stay put."""

import json

import pytest
import torch

from aunce_bench.data.loaders import contrastive_transform, supervised_transform, training_transform
from aunce_bench.errors import UserError
from aunce_bench.protocols import parse_noise, plan_runs
from aunce_bench.specs import DESCRIPTIVE_METHOD_FIELDS, ViewSpec, load_method, load_protocol

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PARTS = ("colour_jitter", "grayscale", "blur")


def views_of(transform, images, seed=0):
    torch.manual_seed(seed)
    return transform(images)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_unset_parts_take_the_recipe_default():
    assert ViewSpec().resolved(default=True) == dict.fromkeys(PARTS, True)
    assert ViewSpec(grayscale=True).resolved(default=False) == {"colour_jitter": False, "grayscale": True,
                                                                "blur": False}


def test_the_parts_compose_the_two_recipes_views(images):
    off = training_transform(32, MEAN, STD, colour_jitter=False, grayscale=False, blur=False)
    on = training_transform(32, MEAN, STD, colour_jitter=True, grayscale=True, blur=True)
    assert torch.equal(views_of(off, images), views_of(supervised_transform(32, MEAN, STD), images))
    assert torch.equal(views_of(on, images), views_of(contrastive_transform(32, MEAN, STD), images))
    for part in PARTS:  # each part, switched on alone, changes the views
        alone = training_transform(32, MEAN, STD, **{p: p == part for p in PARTS})
        assert not torch.equal(views_of(alone, images), views_of(off, images)), part


def _run(method: str):
    return plan_runs(load_method(method), load_protocol("synth_bp4d_3fold"), "quick", [1], [0], parse_noise("none"))[0]


def test_views_join_the_run_id_only_when_a_method_sets_them():
    run = _run("aunce")
    assert run.method.views is None
    # the id is the hash of the spec without the field: ids of runs stored before views existed still match
    payload = run.model_dump(mode="json", exclude={"method": {*DESCRIPTIVE_METHOD_FIELDS, "views"}})
    assert "views" not in json.dumps(payload)
    variant = _run("aunce_cropflip")
    assert variant.method.views == ViewSpec(colour_jitter=False, grayscale=False, blur=False)
    assert variant.run_id != run.run_id
    assert variant.method.loss == run.method.loss and variant.method.train == run.method.train


def test_views_on_a_recipe_with_fixed_views_are_refused(tmp_path):
    path = tmp_path / "coteaching_views.yaml"
    path.write_text("name: coteaching_views\ninclude: coteaching\nviews: {blur: true}\n")
    with pytest.raises(UserError, match="coteaching_views.yaml: field 'views': recipe coteaching"):
        plan_runs(load_method(str(path)), load_protocol("synth_bp4d_3fold"), "quick", [1], [0], parse_noise("none"))
