"""The registries: one error format for unknown names, plugins through entry points, and a method's loss checked
at planning against the registry of the kind its recipe takes."""

from importlib.metadata import EntryPoint

import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.formats import FORMATS
from aunce_bench.data.noise import NOISE_MODELS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.errors import UserError
from aunce_bench.losses import CONTRASTIVE_LOSSES, COTEACHING_LOSSES, SUPERVISED_LOSSES, loss_options
from aunce_bench.protocols import resolved_method
from aunce_bench.recipes import RECIPES
from aunce_bench.registry import Registry
from aunce_bench.specs import load_method, load_protocol

runner = CliRunner()


@pytest.mark.parametrize(("registry", "typo", "meant"), [
    (RECIPES, "supervisd", "supervised"),
    (SUPERVISED_LOSSES, "focl", "focal"),
    (COTEACHING_LOSSES, "coteachin", "coteaching"),
    (CONTRASTIVE_LOSSES, "supcn", "supcon"),
    (NOISE_MODELS, "symetric", "symmetric"),
    (FORMATS, "bp4", "bp4d"),
    (PROFILES, "disf", "disfa"),
], ids=lambda value: value.kind if isinstance(value, Registry) else None)
def test_every_registry_names_an_unknown_name_the_same_way(registry, typo, meant):
    with pytest.raises(UserError) as raised:
        registry.get(typo)
    assert str(raised.value) == (f"unknown {registry.kind} '{typo}' (did you mean '{meant}'?); known: "
                                 f"{', '.join(sorted(registry.names()))}")
    assert registry.names() == sorted(registry) and meant in registry and registry[meant] is registry.get(meant)
    with pytest.raises(UserError, match=rf"^unknown {registry.kind} 'zzzzzzzz'; known: "):  # nothing close
        registry.get("zzzzzzzz")


def test_a_name_is_registered_once():
    registry = Registry("widget", "aunce_bench.test_widgets")
    registry.register("a")(len)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.register("a")(max)
    assert registry.get("a") is len


PLUGIN = '''\
def squared(logits, labels, weights, *, scale: float = 1.0):
    return scale * (logits ** 2).mean()


class Gadget:
    pass
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module `fake_plugin` on sys.path, and `entry_points` answering with `points` {group: [(name, value)]}."""
    (tmp_path / "fake_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    points: dict[str, list[tuple[str, str]]] = {}
    asked = []

    def entry_points(*, group):
        asked.append(group)
        return [EntryPoint(name, value, group) for name, value in points.get(group, [])]

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    return points, asked


def test_a_plugin_named_by_an_entry_point_is_found_and_listed_loading_the_group_once(plugin):
    points, asked = plugin
    points["aunce_bench.test_widgets"] = [("gadget", "fake_plugin:Gadget")]
    registry = Registry("widget", "aunce_bench.test_widgets")
    registry.register("builtin")(len)
    assert registry.get("builtin") is len and asked == []  # a registered name needs no plugin
    assert registry.get("gadget").__name__ == "Gadget"
    assert registry.names() == ["builtin", "gadget"] and "gadget" in registry
    with pytest.raises(UserError, match=r"unknown widget 'gadgt' \(did you mean 'gadget'\?\); known: builtin, gadget"):
        registry.get("gadgt")
    assert asked == ["aunce_bench.test_widgets"]


def test_a_plugin_that_takes_a_registered_name_or_does_not_load_is_named(plugin):
    points, _ = plugin
    points["aunce_bench.test_widgets"] = [("builtin", "fake_plugin:Gadget")]
    registry = Registry("widget", "aunce_bench.test_widgets")
    registry.register("builtin")(len)
    with pytest.raises(UserError, match="entry point 'builtin' = fake_plugin:Gadget of group aunce_bench.test_widgets: "
                                        "widget 'builtin' is already registered; rename the entry point"):
        registry.get("other")
    points["aunce_bench.test_widgets"] = [("broken", "no_such_module:thing")]
    with pytest.raises(UserError, match="entry point 'broken' = no_such_module:thing .*does not load "
                                        "\\(ModuleNotFoundError"):
        Registry("widget", "aunce_bench.test_widgets").get("broken")


def test_a_plugin_loss_is_usable_in_a_method_with_its_options(plugin, tiny_specs, tmp_path, monkeypatch):
    points, _ = plugin
    points["aunce_bench.supervised_losses"] = [("squared", "fake_plugin:squared")]
    monkeypatch.setattr(SUPERVISED_LOSSES, "_entries", dict(SUPERVISED_LOSSES._entries))  # restored after the test
    monkeypatch.setattr(SUPERVISED_LOSSES, "_plugins_loaded", False)
    method = tmp_path / "squared.yaml"
    method.write_text((tiny_specs / "tiny_fast_wce.yaml").read_text().replace("{name: wce}",
                                                                              "{name: squared, scale: 2.0}"))
    resolved, _ = resolved_method(load_method(str(method)), load_protocol(str(tiny_specs / "tiny_easy.yaml")), "quick")
    assert resolved.loss.name == "squared" and loss_options("squared", "supervised") == {"scale": 1.0}


# ------------------------------------------------------------------- a loss of the kind its recipe takes
@pytest.mark.parametrize(("base", "loss", "message"), [
    ("wce", "aunce", "'aunce' is a contrastive loss; recipe 'supervised' takes a supervised loss (one of: asl, bce, "
                     "elr, focal, gce, wce)"),
    ("aunce", "wce", "'wce' is a supervised loss; recipe 'contrastive_probe' takes a contrastive loss (one of: aunce, "
                     "hcl, simclr, supcon)"),
    ("coteaching", "wce", "'wce' is a supervised loss; recipe 'coteaching' takes a co-teaching loss (one of: "
                          "coteaching)"),
    ("wce_linear", "supcon", "'supcon' is a contrastive loss; recipe 'supervised_probe' takes a supervised loss "
                             "(one of: asl, bce, elr, focal, gce, wce)"),
    ("wce", "wcee", "unknown supervised loss 'wcee' (did you mean 'wce'?); known: asl, bce, elr, focal, gce, wce"),
])
def test_a_loss_of_another_kind_than_the_recipe_takes_fails_at_planning_naming_the_field(base, loss, message,
                                                                                           tmp_path):
    method = tmp_path / "bad.yaml"
    method.write_text(f"name: bad\ninclude: {base}\nloss: {{name: {loss}}}\n")
    result = runner.invoke(app, ["run", "--method", str(method), "--protocol", "synth_bp4d_3fold", "--quick",
                                 "--db", str(tmp_path / "r.sqlite")])
    assert (result.exit_code, result.stderr) == (2, f"error: {method}: field 'loss.name': {message}\n")
    assert not (tmp_path / "r.sqlite").exists()
