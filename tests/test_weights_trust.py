"""Weights that cannot be trusted or read: verification, the cache, downloads, bad files.

Everything runs against FF-Micro (1.1M parameters, 32 x 32 images) dressed up as a
published preset, a loopback HTTP server or a `file://` mirror: no network, nothing big.
"""

import os
import pickle
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import ffzoo
from ffzoo.weights import ConversionError, NonFiniteWeightsWarning, UnsafeCheckpointError
from ffzoo.weights import download, loading, presets
from ffzoo.weights import pth as ffpth
from tests.conftest import ROOT
from tests import loopback
from references import torch_ffvit

MICRO = "ffvit_micro_patch4_32"
MICRO_DIMS = dict(patch_size=4, embed_dim=128, depth=6, image_size=32, pos_grid=8)
FILE = "micro-test-checkpoint.pth"
PIN = "FFZOO_WEIGHTS_SHA256_FFVIT_MICRO_PATCH4_32_NONE"


def _state(seed, **dims):
    model = torch_ffvit.perturb(torch_ffvit.FFViT(**dict(MICRO_DIMS, **dims)), seed=seed).eval()
    return model.state_dict()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The genuine file, a poisoned one of the same architecture, and a wrong one."""
    root = tmp_path_factory.mktemp("checkpoints")
    files = {"good": _state(0), "poisoned": _state(1), "wrong": _state(0, embed_dim=32, depth=1)}
    for name, state in files.items():
        torch.save({"model": state}, root / f"{name}.pth")
    return root


@pytest.fixture
def preset(monkeypatch, tmp_path):
    """FF-Micro's preset row as a published preset; KERAS_HOME in tmp_path."""
    row = presets.preset_for_model(MICRO)
    for key, value in dict(source_url="http://127.0.0.1:9/unreachable/" + FILE, file_name=FILE,
                           classes=1000, sha256=None, source_entry="model").items():
        monkeypatch.setitem(row, key, value)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(PIN, raising=False)
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)
    return row


def _mirror(monkeypatch, tmp_path, checkpoints, which):
    root = tmp_path / f"mirror-{which}"
    root.mkdir(exist_ok=True)
    if (root / FILE).exists():
        (root / FILE).unlink()
    os.link(checkpoints / f"{which}.pth", root / FILE)
    monkeypatch.setenv(download.MIRROR_ENV, root.as_uri() + "/")
    return root


def _cache(tmp_path):
    path = tmp_path / "keras_home" / "models" / "ffzoo"
    return sorted(os.listdir(path)) if path.exists() else []


# ---------------------------------------------------------------------------------------
# Verification of what is downloaded and cached (loads into a model: every backend).


def test_first_conversion_records_and_prints_the_hash_then_checks_it(preset, checkpoints, tmp_path,
                                                                     monkeypatch, capsys):
    _mirror(monkeypatch, tmp_path, checkpoints, "good")
    digest = download.sha256_of(checkpoints / "good.pth")
    model = ffzoo.create_model(MICRO, weights="imagenet", classifier_activation=None)
    out = capsys.readouterr().out
    assert f"sha256 {digest}" in out and f"set {PIN}={digest}" in out
    h5 = tmp_path / "keras_home" / "models" / "ffzoo" / "ffvit_micro_patch4_32.none.weights.h5"
    record = loading._read_record(str(h5))
    assert record["source_sha256"] == digest
    assert record["weights_sha256"] == download.sha256_of(h5)
    want = model.get_weights()

    _poison(h5)
    with pytest.raises(ValueError, match=r"cached weights .*weights.h5 have sha256 .* removed"):
        ffzoo.create_model(MICRO, weights="imagenet")
    assert _cache(tmp_path) == [FILE]
    monkeypatch.setenv(download.MIRROR_ENV, (tmp_path / "empty-mirror").as_uri() + "/")
    again = ffzoo.create_model(MICRO, weights="imagenet", classifier_activation=None)  # from the cached .pth
    for got, expected in zip(again.get_weights(), want):
        np.testing.assert_array_equal(got, expected)


def _poison(h5):
    """Changes one weight of a `.weights.h5` file in place: still a valid file."""
    import h5py

    with h5py.File(h5, "r+") as f:
        datasets = []
        f.visititems(lambda name, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None)
        target = max(datasets, key=lambda d: d.size)
        target[(0,) * target.ndim] = 42.0


def test_corrupt_cached_weights_are_removed_and_rebuilt(preset, checkpoints, tmp_path, monkeypatch):
    _mirror(monkeypatch, tmp_path, checkpoints, "good")
    ffzoo.create_model(MICRO, weights="imagenet")
    h5 = tmp_path / "keras_home" / "models" / "ffzoo" / "ffvit_micro_patch4_32.none.weights.h5"
    os.remove(str(h5) + ".json")  # no record (as if placed by hand): loading itself must notice
    h5.write_bytes(h5.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"Cannot read .*weights.h5: a damaged or truncated"):
        ffzoo.create_model(MICRO, weights="imagenet")
    assert _cache(tmp_path) == [FILE]
    ffzoo.create_model(MICRO, weights="imagenet")
    assert h5.exists()


def test_pinned_hash_refuses_a_poisoned_file(preset, checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv(PIN, download.sha256_of(checkpoints / "good.pth"))
    _mirror(monkeypatch, tmp_path, checkpoints, "poisoned")
    with pytest.raises(ValueError, match=rf"has sha256 [0-9a-f]{{64}}, but {PIN} expects"):
        ffzoo.create_model(MICRO, weights="imagenet")
    assert _cache(tmp_path) == []
    _mirror(monkeypatch, tmp_path, checkpoints, "good")
    ffzoo.create_model(MICRO, weights="imagenet")
    assert len(_cache(tmp_path)) == 3


def test_wrong_architecture_is_not_kept_in_the_cache(preset, checkpoints, tmp_path, monkeypatch):
    _mirror(monkeypatch, tmp_path, checkpoints, "wrong")
    with pytest.raises(ConversionError, match="shape mismatches"):
        ffzoo.create_model(MICRO, weights="imagenet")
    assert _cache(tmp_path) == []
    cache = tmp_path / "keras_home" / "models" / "ffzoo"
    os.link(checkpoints / "wrong.pth", cache / FILE)  # already cached by an older version
    with pytest.raises(ConversionError):
        ffzoo.create_model(MICRO, weights="imagenet")
    assert _cache(tmp_path) == []


def test_nonfinite_weights_warn_naming_the_tensors(tmp_path):
    state = _state(0)
    state["blocks.2.mlp1.fc1.weight"][0, 0] = float("nan")
    state["norm.bias"][3] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save({"model": state}, path)
    with pytest.warns(NonFiniteWeightsWarning, match=r"nan.pth: NaN or Inf in 2 tensor\(s\): "
                                                     r"blocks.2.mlp1.fc1.weight, norm.bias"):
        model = ffzoo.create_model(MICRO, weights=str(path))
    h5 = tmp_path / "nan.weights.h5"
    model.save_weights(str(h5))
    with pytest.warns(NonFiniteWeightsWarning, match=r"nan.weights.h5: NaN or Inf in 2 tensor\(s\): "
                                                     r"block_2/feature_ff/ff/fc1/kernel, norm/beta"):
        ffzoo.create_model(MICRO, weights=str(h5))


def test_bad_weights_h5_is_a_value_error_naming_the_path(tmp_path):
    model = ffzoo.create_model(MICRO)
    good = tmp_path / "good.weights.h5"
    model.save_weights(str(good))
    import h5py

    with h5py.File(tmp_path / "foreign.weights.h5", "w") as f:  # HDF5, but not this model's
        f["layers/dense/vars/0"] = np.zeros((3, 4))
    (tmp_path / "empty.weights.h5").write_bytes(b"")
    (tmp_path / "cut.weights.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "text.weights.h5").write_text("not weights\n")
    cases = {"empty": "is empty", "cut": "damaged or truncated", "text": "is not an HDF5 file",
             "foreign": "does not hold the weights of"}
    for name, message in cases.items():
        path = tmp_path / f"{name}.weights.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns about the foreign file's layout
            with pytest.raises(ValueError, match=message) as error:
                ffzoo.weights.load(model, str(path), presets.preset_for_model(MICRO))
        assert str(path) in str(error.value) and "\n" not in str(error.value), name


# ---------------------------------------------------------------------------------------
# The cache and the download itself (no model: once).


def _fake_preset(file_name):
    return {"name": "fake.test", "model": "fake_model", "file_name": file_name,
            "source_url": "http://127.0.0.1:9/" + file_name, "sha256": None}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)
    monkeypatch.delenv("FFZOO_WEIGHTS_SHA256_FAKE_TEST", raising=False)
    return tmp_path / "keras_home" / "models" / "ffzoo"


@pytest.mark.once
def test_pin_variable_spelling():
    assert download.pin_variable({"name": "ffvit_tiny_patch16_224.in1k"}) == \
        "FFZOO_WEIGHTS_SHA256_FFVIT_TINY_PATCH16_224_IN1K"


@pytest.mark.once
def test_stalled_mirror_is_an_error_after_the_timeout(home, tmp_path, monkeypatch):
    monkeypatch.setenv(download.TIMEOUT_ENV, "1")
    with loopback.serve(tmp_path) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        started = time.monotonic()
        with pytest.raises(download.DownloadError, match=r"Cannot download http://127.0.0.1:\d+/"
                           r"stall.pth: no data for 1 s .*FFZOO_DOWNLOAD_TIMEOUT"):
            download.fetch(_fake_preset("stall.pth"), read=lambda path, digest: path)
        assert time.monotonic() - started < 8
    assert os.listdir(home) == []


@pytest.mark.once
def test_missing_file_says_what_to_do(home, tmp_path, monkeypatch):
    with loopback.serve(tmp_path) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(download.DownloadError) as error:
            download.fetch(_fake_preset("absent.pth"), read=lambda path, digest: path)
    message = str(error.value)
    assert f"http://127.0.0.1:{server.server_port}/absent.pth: HTTP 404" in message
    for advice in ("FFZOO_WEIGHTS_MIRROR", "ffzoo convert absent.pth",
                   str(home / "fake.test.weights.h5")):
        assert advice in message
    assert os.listdir(home) == []


@pytest.mark.once
def test_pinned_hash_is_enforced_on_download(home, tmp_path, monkeypatch):
    (tmp_path / "file.pth").write_bytes(b"poisoned")
    monkeypatch.setenv("FFZOO_WEIGHTS_SHA256_FAKE_TEST", "ab" * 32)
    with loopback.serve(tmp_path) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(ValueError, match="FFZOO_WEIGHTS_SHA256_FAKE_TEST expects abab"):
            download.fetch(_fake_preset("file.pth"), read=lambda path, digest: pytest.fail("read"))
    assert os.listdir(home) == []
    monkeypatch.setenv("FFZOO_WEIGHTS_SHA256_FAKE_TEST", "not-a-hash")
    with pytest.raises(ValueError, match="should be a sha256"):
        download.fetch(_fake_preset("file.pth"), read=lambda path, digest: path)


@pytest.mark.once
def test_leftover_part_files_are_cleaned(home, tmp_path, monkeypatch):
    home.mkdir(parents=True)
    dead = home / "file.pth.4194999.partial"  # a pid above the kernel's maximum
    live = home / f"file.pth.{os.getppid()}.partial"  # a download in progress (a live process)
    other = home / "other.pth.4194999.partial"  # another file's download: not this fetch's
    for path in (dead, live, other):
        path.write_bytes(b"half")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "file.pth").write_bytes(b"whole")
    monkeypatch.setenv(download.MIRROR_ENV, (tmp_path / "mirror").as_uri())
    download.fetch(_fake_preset("file.pth"), read=lambda path, *digest: path)
    assert (home / "file.pth").read_bytes() == b"whole"
    assert sorted(os.listdir(home)) == sorted([live.name, other.name, "file.pth"])


@pytest.mark.once
def test_cache_never_falls_back_to_a_shared_directory(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(ValueError, match="Set KERAS_HOME to a directory of your own"):
        download.cache_dir()


@pytest.mark.once
def test_unwritable_cache_is_an_error_before_downloading(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "file" / "keras"))
    with loopback.serve(tmp_path) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(ValueError, match=r"weights cache .* is not writable.*KERAS_HOME"):
            download.fetch(_fake_preset("file"), read=lambda path, digest: path)
    assert server.requests == []


# ---------------------------------------------------------------------------------------
# Bad checkpoints: each a one-line ValueError saying what the file is (no model: once).


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def _save(path, obj):
    torch.save(obj, path)


BAD_PTH = [
    ("empty", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    ("html", lambda p: p.write_text("<!DOCTYPE html><html><body>Sign in</body></html>"),
     r"is an HTML/XML page"),
    ("text", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\n"),
     r"neither a zip archive nor a pickle"),
    ("tensor_model", lambda p: _save(p, {"model": torch.zeros(3)}), r"'model' entry is a Tensor"),
    ("list_model", lambda p: _save(p, {"model": [torch.zeros(3)]}), r"'model' entry is a list"),
    ("int_keys", lambda p: _save(p, {"model": {0: torch.zeros(3)}}), r"has a key of type int \(0\)"),
    ("sparse", lambda p: _save(p, {"model": {"norm.weight": torch.eye(3).to_sparse()}}),
     r"'norm.weight' is torch.sparse_coo \(sparse\)"),
    ("meta", lambda p: _save(p, {"model": {"norm.weight": torch.zeros(3, device="meta")}}),
     r"'norm.weight' is a meta tensor"),
    ("integer", lambda p: _save(p, {"model": {"norm.weight": torch.zeros(3, dtype=torch.int64)}}),
     r"'norm.weight' is int64, not a floating-point weight"),
    ("global_zip", lambda p: _save(p, {"model": {}, "payload": _Exploit()}),
     r"its pickle imports posix.system"),
    ("global_raw", lambda p: p.write_bytes(pickle.dumps(_Exploit(), protocol=2)),
     r"its pickle imports posix.system"),
    ("global_module", lambda p: _save(p, torch.nn.Linear(2, 2)),  # a whole pickled model
     r"its pickle imports torch.nn.modules.linear.Linear"),
]


@pytest.mark.once
@pytest.mark.parametrize("name,make,message", BAD_PTH, ids=[c[0] for c in BAD_PTH])
def test_bad_checkpoint_is_one_line_saying_what_it_is(name, make, message, tmp_path):
    path = tmp_path / f"{name}.pth"
    make(path)
    with pytest.raises(ValueError, match=message) as error:
        ffpth.read_state_dict(path)
    text = str(error.value)
    assert str(path) in text and "\n" not in text
    assert "weights_only" not in text
    if name.startswith("global"):
        assert isinstance(error.value, UnsafeCheckpointError)


_BOMB = r"""
import resource, sys
from ffzoo.weights import convert, pth
shapes = {"head/kernel": (128, 1000), "head/bias": (1000,), "norm/gamma": (128,)}
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for path in sys.argv[1:]:
    before = peak()
    try:
        convert.state_dict_to_keras(pth.read_state_dict(path), shapes)
        message = "converted"
    except ValueError as error:
        message = type(error).__name__ + " " + str(error).splitlines()[0][:160]
    print(f"{peak() - before:.0f}\t{message}")
"""


@pytest.mark.once
def test_checkpoint_bombs_cost_no_memory(tmp_path, record):
    """A 1.6 KB file whose one tensor claims 12000 x 12000 (one stored float16, all strides
    0), and a 220 KB one with 1000 names viewing the same 64K-element storage: before,
    reading converted each to float32 (549 MiB; 254 MiB) before any check."""
    torch.save({"model": {"head.weight": torch.zeros(1, dtype=torch.float16).expand(12000, 12000)}},
               tmp_path / "expand.pth")
    storage = torch.zeros(65536, dtype=torch.float16)
    torch.save({"model": {f"extra.{i}": storage.view(256, 256) for i in range(1000)}},
               tmp_path / "views.pth")
    paths = [tmp_path / "expand.pth", tmp_path / "views.pth"]
    run = subprocess.run([sys.executable, "-c", _BOMB, *map(str, paths)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="numpy"))
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()[-2:]
    for path, line in zip(paths, lines):
        grown, message = line.split("\t")
        record(f"peak memory growth reading {path.name} ({path.stat().st_size / 1e3:.1f} KB), MiB",
               float(grown))
        assert float(grown) < 64, (path.name, grown)
        assert message.startswith("ConversionError")
    assert "larger than the whole model" in lines[0]
