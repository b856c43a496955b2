"""The weights manifest (`weights/manifest.json`, shipped as `ffzoo.presets_data`)."""

import functools
import importlib.resources
import json
import pathlib


@functools.lru_cache(maxsize=None)
def manifest():
    try:  # installed: the manifest is package data
        text = importlib.resources.files("ffzoo.presets_data").joinpath("manifest.json").read_text()
    except ModuleNotFoundError:  # a source checkout on sys.path without an install
        text = (pathlib.Path(__file__).resolve().parents[2] / "weights" / "manifest.json").read_text()
    return json.loads(text)


def list_presets():
    """Every preset row of the manifest (dicts; see weights/README.md for the columns)."""
    return manifest()["presets"]


def preset_for_model(model_name):
    """The ImageNet preset of a registered model, or None when the manifest has none."""
    for row in list_presets():
        if row["model"] == model_name:
            return row
    return None
