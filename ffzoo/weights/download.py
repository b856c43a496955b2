"""Downloading checkpoints into the Keras cache: atomic, bounded, mirror-aware, and checked
against every sha256 that is given (the preset's, a pin, an argument). No preset has a
recorded sha256 yet, so until one is pinned a download is checked only for being whole
and for converting strictly into the model.

Environment:
- `KERAS_HOME`: the cache root (default `~/.keras`); files go to `$KERAS_HOME/models/ffzoo`.
- `FFZOO_WEIGHTS_MIRROR`: a base URL (`https://...`, `http://...`, `file:///...`) serving
  the same file names as the published URLs.
- `FFZOO_WEIGHTS_SHA256_<PRESET>`: the sha256 a preset's source file must have, where
  `<PRESET>` is the preset name upper-cased with every other character than A-Z and
  0-9 turned into `_` (`ffvit_tiny_patch16_224.in1k` ->
  `FFZOO_WEIGHTS_SHA256_FFVIT_TINY_PATCH16_224_IN1K`). See `pin_variable`.
- `FFZOO_DOWNLOAD_TIMEOUT`: seconds a connection or a read may stall (default 60).
"""

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

from ffzoo import files

MIRROR_ENV = "FFZOO_WEIGHTS_MIRROR"
TIMEOUT_ENV = "FFZOO_DOWNLOAD_TIMEOUT"
PIN_PREFIX = "FFZOO_WEIGHTS_SHA256_"
DEFAULT_TIMEOUT = 60.0
CACHE_SUBDIR = os.path.join("models", "ffzoo")
_PROGRESS_SECONDS = 5.0


class DownloadError(OSError):
    """A source file that could not be downloaded; the message says what to do."""


def cache_dir():
    """`$KERAS_HOME/models/ffzoo` (default `~/.keras/models/ffzoo`); not created here.

    Never falls back to a shared directory: without `KERAS_HOME` and with a home
    directory that cannot be written, this is an error naming `KERAS_HOME`.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        if base == "~" or not _writable_or_creatable(base):
            raise ValueError(
                f"The home directory {base!r} is not writable, so the weights cache "
                "(~/.keras/models/ffzoo) cannot live there. Set KERAS_HOME to a directory "
                "of your own (not a shared one such as /tmp)."
            )
        home = os.path.join(base, ".keras")
    return os.path.join(os.path.abspath(home), CACHE_SUBDIR)


def _writable_or_creatable(path):
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def writable_cache_dir():
    """`cache_dir()`, created, after proving a file can be written there."""
    path = cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"The weights cache {path} is not writable ({error.strerror or error}). Set "
            "KERAS_HOME to a writable directory of your own; nothing was downloaded."
        ) from None
    return path


def converted_path(preset):
    """Where the converted `.weights.h5` of a preset is cached."""
    return os.path.join(cache_dir(), preset["name"] + ".weights.h5")


def pin_variable(preset):
    """The environment variable that pins a preset's source sha256."""
    return PIN_PREFIX + re.sub(r"[^A-Z0-9]", "_", preset["name"].upper())


def expected_hashes(preset, sha256=None):
    """`{where: sha256}` the source file must match: the argument, the pin variable and
    the preset row, each where given. Raises `ValueError` on a malformed hash."""
    given = {"the sha256 argument": sha256, pin_variable(preset): os.environ.get(pin_variable(preset)),
             "the weights table": preset.get("sha256")}
    hashes = {}
    for where, value in given.items():
        if value in (None, ""):
            continue
        value = value.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"{where} should be a sha256 (64 hex digits); got {value!r}.")
        hashes[where] = value
    return hashes


def source_url(preset):
    """The preset's URL, or the same file name under `$FFZOO_WEIGHTS_MIRROR`."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + preset["file_name"]
    return preset["source_url"]


def download_timeout():
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds.")
    return value


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_hashes(path, hashes, origin):
    """Returns the file's sha256; raises `ValueError` when it is not the pinned one."""
    actual = sha256_of(path)
    for where, expected in hashes.items():
        if actual != expected:
            raise ValueError(
                f"The file from {origin} has sha256 {actual}, but {where} expects {expected}: "
                "it is corrupt, truncated or not the published file. Nothing was cached; "
                "try again, or check the mirror."
            )
    return actual


def _advice(preset, url):
    return (
        f"To get {preset['file_name']} another way: set {MIRROR_ENV} to a mirror or a local "
        f"folder holding it (e.g. file:///mnt/weights/); or, on a machine that has it, run "
        f"`ffzoo convert {preset['file_name']} {preset['name']}.weights.h5 --model "
        f"{preset['model']}` and copy the result to {converted_path(preset)}."
    )


def _download(url, destination, timeout, preset):
    """Streams `url` into `destination`; raises `DownloadError` saying what to do."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as f:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            received, started, shown = 0, time.monotonic(), time.monotonic()
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                f.write(block)
                received += len(block)
                if time.monotonic() - shown > _PROGRESS_SECONDS:
                    shown = time.monotonic()
                    of = f" of {total / 1e6:.1f}" if total else ""
                    print(f"ffzoo: downloading {url}: {received / 1e6:.1f}{of} MB "
                          f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            f.flush()
            os.fsync(f.fileno())
    except urllib.error.HTTPError as error:
        raise DownloadError(f"Cannot download {url}: HTTP {error.code} {error.reason}. "
                            f"{_advice(preset, url)}") from None
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets, cut reads
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError):
            reason = f"no data for {timeout:g} s (the server stalled; {TIMEOUT_ENV} sets the limit)"
        raise DownloadError(f"Cannot download {url}: {reason}. {_advice(preset, url)}") from None
    if total is not None and received != total:
        raise DownloadError(f"Cannot download {url}: got {received:,} of {total:,} bytes "
                            f"(connection cut). {_advice(preset, url)}")


def fetch(preset, read, sha256=None):
    """Downloads the preset's source file if needed and returns `read(local_path, digest)`.

    The download goes to a temporary name in the cache and is renamed into place only
    after it is complete, its sha256 matches every pin (`expected_hashes`) and `read`
    succeeded on it; a failed, corrupt or interrupted download leaves nothing behind.
    A cached file that fails the same checks (`read` raising `ValueError`: unreadable,
    or not this model's weights) is removed, so the next call downloads it again.
    """
    hashes = expected_hashes(preset, sha256)
    directory = writable_cache_dir()
    files.remove_partials(directory, preset["file_name"], only_dead=True)
    final = os.path.join(directory, preset["file_name"])
    if os.path.exists(final):
        try:
            digest = _check_hashes(final, hashes, final)
        except ValueError:  # not the pinned file: download the right one
            os.remove(final)
        else:
            try:
                return read(final, digest)
            except ValueError:  # unreadable or foreign: drop it so the next call downloads
                os.remove(final)
                raise
    url = source_url(preset)

    def download_and_read(partial):
        _download(url, partial, download_timeout(), preset)
        return read(partial, _check_hashes(partial, hashes, url))

    return files.write_atomically(final, download_and_read)
