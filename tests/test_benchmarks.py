"""The speed and scaling benchmarks (benchmarks/) run end to end and report sane numbers.

The smoke tests start real worker processes, so they run once, in the TensorFlow
pass of the suite, with the cheapest settings (--quick, PyTorch and Keras's torch
backend only: no compilation at start-up); results go to tmp_path, never the repo.
The exponent fit and the markdown rendering are pure functions, tested on every pass.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import run_all, scaling
from tests.conftest import BACKEND, ROOT

ONCE = pytest.mark.skipif(BACKEND != "tensorflow", reason="benchmark smoke tests run once, "
                          "in the suite's TensorFlow pass (they start their own worker processes)")


QUICK_RUNS = {  # module: arguments; the cheapest contenders (no compilation)
    "benchmarks.speed": ["--contenders", "torch/eager", "--rounds", "1"],
    "benchmarks.scaling": ["--backend", "torch", "--mode", "eager", "--rounds", "1"],
}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """`{module: result JSON, "directory": ...}` of --quick runs, run side by side.

    Their workers mostly import modules (one core each), so two runs at a time keep
    both cores busy; the timings are meaningless here anyway.
    """
    output = tmp_path_factory.mktemp("benchmarks")
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="torch")  # not TensorFlow: quicker to import
    runs = {}
    for module, args in QUICK_RUNS.items():
        with open(output / f"{module}.log", "w") as log:
            runs[module] = subprocess.Popen(
                [sys.executable, "-m", module, "--quick", "--output-dir", str(output), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    results = {"directory": output}
    try:
        for module, run in runs.items():
            run.wait(timeout=300)
            assert run.returncode == 0, (output / f"{module}.log").read_text()[-3000:]
            with open(output / f"{module.split('.')[1]}.json") as f:
                results[module] = json.load(f)
    finally:
        for run in runs.values():  # their workers exit when their parent's pipe closes
            if run.poll() is None:
                run.kill()
    return results


def test_fit_exponent_recovers_known_exponent():
    tokens = np.array([197, 325, 485, 677, 901, 1025])
    k, c = scaling.fit_exponent(tokens, 3e-6 * tokens ** 1.7)
    assert abs(k - 1.7) < 1e-6
    assert abs(c / 3e-6 - 1) < 1e-6


def fake_record(backend, mode, rate, status="ok"):
    if status != "ok":
        return {"backend": backend, "mode": mode, "status": status, "error": "Traceback ..."}
    return {"backend": backend, "mode": mode, "status": "ok", "times_s": [1 / rate], "median_s": 1 / rate,
            "images_per_s": rate, "steps_per_s": rate / 8, "gflops_per_s": rate * 2.9,
            "peak_fraction": rate * 2.9 / 100, "rss_mib": 500.0, "ratio_vs_pytorch": rate / 10,
            "max_abs_diff_vs_pytorch": 1e-6, "agrees": True}


def fake_results():
    records = {"pytorch/eager": fake_record("pytorch", "eager", 10.0),
               "pytorch/compile": fake_record("pytorch", "compile", 0, "failed: no compiler"),
               "tensorflow/xla": fake_record("tensorflow", "xla", 12.0),
               "jax/jit": fake_record("jax", "jit", 14.0),
               "torch/eager": fake_record("torch", "eager", 9.0)}
    best = {r["backend"]: r for r in records.values() if r["status"] == "ok"}
    entry = {"model": "ffvit_tiny_patch16_224", "batch": 32, "image_size": 224, "gflops_per_image": 2.9,
             "contenders": records, "best": best}
    speed = {"machine": "test machine", "date": "2025-01-01T00:00:00+00:00", "versions": {"keras": "3"},
             "rounds": 1, "tolerance": 1e-3, "disagreements": [], "inference": [entry], "training": [entry],
             "matmul": {"size": 2048, "peak_gflops_per_s": 100.0, "peak_by": "jax"}}
    point = {"status": "ok", "tokens": 197, "seconds_per_image": 0.01}
    curves = {key: dict(spec, points={"224": point}, exponent=1.1, prefactor=1e-4, flops_exponent=1.0)
              for key, spec in scaling.CURVES.items()}
    scaling_result = {"backend": "jax", "mode": "jit", "batch": 4, "rounds": 1, "sizes": [224], "curves": curves}
    return {"speed": speed, "scaling": scaling_result, "input_pipeline": None}


def test_render_markdown_has_a_row_per_backend():
    markdown = run_all.render_markdown(fake_results())
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    for backend in ("pytorch", "tensorflow", "jax", "torch"):
        assert any(line.startswith(f"| {backend}/") for line in rows), backend
        assert any(run_all.BACKEND_NAMES[backend] in line for line in rows), backend
    assert "failed: no compiler" in markdown
    assert "![scaling](benchmarks/results/scaling.png)" in markdown
    assert "1.10" in markdown  # the fitted exponent


def test_replace_section_only_between_markers():
    text = f"intro\n{run_all.START}\nold\n{run_all.END}\nrest\n"
    assert run_all.replace_section(text, "new\n") == f"intro\n{run_all.START}\nnew\n{run_all.END}\nrest\n"
    assert run_all.replace_section("no markers here\n", "new\n") is None


def positive(value):
    return isinstance(value, float) and value > 0


@ONCE
def test_speed_quick(quick_results):
    result = quick_results["benchmarks.speed"]
    assert positive(result["matmul"]["peak_gflops_per_s"])
    for job in ("inference", "training"):
        (entry,) = result[job]
        assert set(entry["contenders"]) == {"pytorch/eager", "torch/eager"}
        for name in ("pytorch/eager", "torch/eager"):
            record = entry["contenders"][name]
            assert record["status"] == "ok", record.get("error")
            for key in ("images_per_s", "gflops_per_s", "peak_fraction", "rss_mib"):
                assert positive(record[key]), (job, name, key)
            assert all(positive(t) for t in record["times_s"])
        assert set(entry["best"]) == {"pytorch", "torch"}
    agreement = result["inference"][0]["contenders"]["torch/eager"]
    assert agreement["agrees"] and agreement["max_abs_diff_vs_pytorch"] < 1e-3
    assert result["disagreements"] == []
    markdown = run_all.render_markdown({"speed": result, "scaling": None, "input_pipeline": None})
    assert "| torch/eager |" in markdown


@ONCE
def test_scaling_quick(quick_results):
    result = quick_results["benchmarks.scaling"]
    assert set(result["curves"]) == set(scaling.CURVES)
    for curve in result["curves"].values():
        assert [p["status"] for p in curve["points"].values()] == ["ok"] * len(result["sizes"])
        assert all(positive(p["seconds_per_image"]) for p in curve["points"].values())
        assert isinstance(curve["exponent"], float) and np.isfinite(curve["exponent"])
    assert (quick_results["directory"] / "scaling.png").stat().st_size > 0
