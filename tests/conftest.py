"""Shared fixtures. The whole suite runs once per Keras backend (KERAS_BACKEND)."""

import json
import os
import sys
import tempfile

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BACKEND = keras.backend.backend()
_MEASUREMENTS_FILE = "FFZOO_TEST_MEASUREMENTS"


@pytest.fixture
def record():
    """`record(name, value)`: a figure printed in the run's summary (max differences...)."""

    def _record(name, value):
        if isinstance(value, (float, np.floating)):
            value = float(value)
        # Appended to a file that the controlling process prints at the end, so figures
        # recorded in pytest-xdist workers (bin/test runs two) are printed too.
        with open(os.environ[_MEASUREMENTS_FILE], "a") as f:
            f.write(json.dumps([str(name), value if isinstance(value, (int, float)) else str(value)]) + "\n")

    return _record


def pytest_configure(config):
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controlling process (or the only one)
        descriptor, path = tempfile.mkstemp(prefix="ffzoo-measurements-", suffix=".jsonl")
        os.close(descriptor)
        os.environ[_MEASUREMENTS_FILE] = path  # inherited by the workers it starts
    config.addinivalue_line(
        "markers", "once: backend-independent; bin/test runs it with its first backend only")


def pytest_collection_modifyitems(config, items):
    """`bin/test` sets FFZOO_SKIP_ONCE for its second and later backends."""
    if not os.environ.get("FFZOO_SKIP_ONCE"):
        return
    skip = pytest.mark.skip(reason="backend-independent: ran with the first backend")
    for item in items:
        if item.get_closest_marker("once"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controlling process prints every worker's figures
    path = os.environ.get(_MEASUREMENTS_FILE)
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        measurements = [json.loads(line) for line in f if line.strip()]
    os.remove(path)
    if measurements:
        terminalreporter.section(f"measurements, backend {BACKEND}")
        for name, value in measurements:
            if isinstance(value, float):
                value = f"{value:.3g}"
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(autouse=True)
def _restore_global_keras_config():
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def python_without(tmp_path, *prefixes):
    """Environment for a subprocess whose Python cannot see the named distributions.

    Builds a view of site-packages (links) without entries starting with `prefixes`;
    run the subprocess with `python -S` and this environment.
    """
    import site

    view = tmp_path / ("site-packages-without-" + "-".join(prefixes))
    view.mkdir()
    for directory in site.getsitepackages():
        for entry in os.listdir(directory):
            if entry.lower().startswith(prefixes) or (view / entry).exists():
                continue
            os.symlink(os.path.join(directory, entry), view / entry)
    return dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=f"{view}{os.pathsep}{ROOT}")


def run_python(code, env, *args, timeout=300):
    """Runs `python -S -c code` in `env`; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-S", "-c", code, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
