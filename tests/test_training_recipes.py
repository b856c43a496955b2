"""Every recipe value is defined once: the schema holds types and help, a recipe holds
all of its values, the keys that describe a run have one default each, and no other
file of training/ (nor the help text) repeats a recipe's value. The commands that the
recipes and READMEs show parse with today's flags."""

import ast
import dataclasses
import pathlib
import re
import shlex
import sys
import types

import pytest

from tests.conftest import ROOT
from training import config as cfg

ROOT = pathlib.Path(ROOT)
TRAINING = ROOT / "training"
KINDS = (str, int, float, bool, tuple)


def _recipe(name):
    return sys.modules.get(f"training.recipes.{name}") or __import__(
        f"training.recipes.{name}", fromlist=["RECIPE"])


def _distinctive(value):
    """Recipe values that cannot occur in code by chance: floats other than 0, 0.5 and 1,
    integers of 100 and more, RandAugment policies."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, float):
        return value not in (0.0, 0.5, 1.0)
    if isinstance(value, int):
        return value >= 100
    return isinstance(value, str) and value.startswith("rand-")


def _recipe_values():
    values = {}
    for name in cfg.recipe_names():
        for key, value in _recipe(name).RECIPE.items():
            for item in value if isinstance(value, tuple) else (value,):
                if _distinctive(item):
                    values.setdefault(item, f"{name}.{key}")
    return values


@pytest.mark.once
def test_the_schema_holds_types_and_help_only():
    for key, entry in cfg.SCHEMA.items():
        assert isinstance(entry, tuple) and len(entry) == 2, key
        kind, text = entry
        assert kind in KINDS and isinstance(text, str) and text, key
    assert set(cfg.RECIPE_KEYS).isdisjoint(cfg.RUN_DEFAULTS)
    assert set(cfg.RECIPE_KEYS) | set(cfg.RUN_DEFAULTS) == set(cfg.SCHEMA)
    assert len(cfg.RECIPE_KEYS) == 40 and len(cfg.RUN_DEFAULTS) == 10


@pytest.mark.once
def test_every_recipe_states_every_recipe_value_and_no_run_value():
    assert cfg.recipe_names() == ["deit", "digits", "finetune"]
    for name in cfg.recipe_names():
        recipe = _recipe(name).RECIPE
        assert sorted(recipe) == sorted(cfg.RECIPE_KEYS), name
        config = cfg.load_recipe(name)
        assert list(config) == list(cfg.SCHEMA)
        assert {k: config[k] for k in cfg.RUN_DEFAULTS} == cfg.RUN_DEFAULTS
        assert {k: config[k] for k in recipe} == recipe
        cfg.validate(dict(config, output="runs/x"))
        assert "Expected" in _recipe(name).__doc__ or "no reference figure" in _recipe(name).__doc__


@pytest.mark.once
def test_the_help_states_each_run_default_and_no_recipe_value():
    helps = {action.dest: action.help for action in cfg.parser()._actions}
    for key in cfg.SCHEMA:
        value = cfg.RUN_DEFAULTS.get(key, "not a run key")
        shown = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert helps[key].endswith(f" (default: {shown})") == (key in cfg.RUN_DEFAULTS), key
    for value, where in _recipe_values().items():
        for key, (_, help_text) in cfg.SCHEMA.items():
            assert not re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", help_text), (
                f"the help of {key} repeats {where} = {value!r}")


@pytest.mark.once
@pytest.mark.parametrize("recipe,message", [
    (dict(lr=1e-3), r"^Recipe 'partial' does not set \['model', 'weights', .*'precision'\]: a "
                    r"recipe states every value of what it trains\.$"),
    (dict(seed=1, eval_every=2), r"^Recipe 'partial' sets \['eval_every', 'seed'\], which describe a "
                                 r"run, not a recipe \(training/config.py RUN_DEFAULTS\); pass them "
                                 r"on the command line\.$"),
])
def test_a_recipe_missing_a_value_or_setting_a_run_key_is_refused(recipe, message, monkeypatch):
    monkeypatch.setitem(sys.modules, "training.recipes.partial", types.SimpleNamespace(RECIPE=recipe))
    monkeypatch.setattr(cfg, "recipe_names", lambda: ["digits", "partial"])
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load_recipe("partial")


def _training_sources():
    return sorted(p for p in TRAINING.glob("*.py"))


@pytest.mark.once
def test_no_recipe_value_is_written_anywhere_else_in_training():
    # The recipes' distinctive values (0.99996, 5e-4, 1024, "rand-m9-mstd0.5-inc1", ...)
    # must not occur as constants in the other files of training/, and no function
    # there may give a schema key a default value (WarmupCosine(warmup_lr=1e-6) did).
    values = _recipe_values()
    assert {5e-4, 0.99996, 1024, "rand-m9-mstd0.5-inc1", 0.875, 1e-8} <= set(values)
    found = []
    for path in _training_sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and not isinstance(node.value, bool) \
                    and isinstance(node.value, (int, float, str)) and node.value in values:
                found.append(f"{path.name}:{node.lineno} repeats {values[node.value]} = {node.value!r}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) \
                    + list(node.args.defaults) + list(node.args.kw_defaults)
                for argument, default in zip(arguments, defaults):
                    if default is not None and argument.arg in cfg.SCHEMA:
                        found.append(f"{path.name}:{node.lineno} {node.name}() gives "
                                     f"{argument.arg} a default")
    assert not found, found


@pytest.mark.once
def test_the_data_librarys_default_transform_is_the_deit_recipes_and_never_reaches_a_run():
    import ffzoo.data as fd
    from training import train

    fields = [f.name for f in dataclasses.fields(fd.Augment)]
    assert set(fields) <= set(cfg.SCHEMA)
    deit = cfg.load_recipe("deit")
    assert dataclasses.asdict(fd.Augment()) == {k: deit[k] for k in fields}
    # A run takes every field from its configuration, none from Augment's defaults.
    changed = dict(random_resized_crop=False, crop_scale=(0.3, 0.9), crop_ratio=(0.9, 1.1),
                   pil_exact_resize=True, hflip=0.25, randaugment="rand-m5-n1", random_erasing=0.5,
                   mixup_alpha=0.3, cutmix_alpha=0.7, mix_probability=0.6, switch_probability=0.2,
                   label_smoothing=0.05)
    assert sorted(changed) == sorted(fields)
    augment = train._augment(dict(deit, **changed))
    assert dataclasses.asdict(augment) == changed
    for key, value in changed.items():
        assert value != getattr(fd.Augment(), key), key


def _commands(text, program):
    """The `python -m <program> --flag ...` and `python -m <program> dir/ ...` commands in
    `text` (continuation lines joined)."""
    text = text.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0])[3:] for line in re.findall(
        rf"python -m {re.escape(program)} (?:-|[\w.~]+/)[^\n`]*", text)]


def _text(page):
    """A README, or a module's docstring."""
    text = page.read_text()
    return ast.get_docstring(ast.parse(text)) if page.suffix == ".py" else text


@pytest.mark.once
def test_the_commands_the_recipes_and_readmes_show_parse():
    from training import evaluate

    pages = [ROOT / "README.md", TRAINING / "README.md", TRAINING / "train.py", TRAINING / "evaluate.py"]
    pages += sorted((TRAINING / "recipes").glob("[!_]*.py"))
    seen = {"training.train": 0, "training.evaluate": 0}
    for page in pages:
        text = _text(page)
        for argv in _commands(text, "training.train"):
            if argv == ["--help"]:
                continue
            args = cfg.parser().parse_args(argv)
            if args.recipe is not None:
                assert args.recipe in cfg.recipe_names(), (page.name, argv)
            seen["training.train"] += 1
        for argv in _commands(text, "training.evaluate"):
            evaluate.validate(evaluate.parser().parse_args(argv))
            seen["training.evaluate"] += 1
    for name in cfg.recipe_names():  # each recipe shows how to run it
        assert _commands(_recipe(name).__doc__, "training.train"), name
    assert seen["training.train"] >= 10 and seen["training.evaluate"] >= 4, seen
