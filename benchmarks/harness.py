"""Timing helpers shared by the benchmarks.

This machine's speed drifts from minute to minute (a shared virtual machine), so
every comparison runs its contenders side by side, interleaved call by call
(A, B, C, A, B, C, ...), and reports medians: drift then hits every contender alike
and their ratios stay meaningful. Each contender runs in its own process
(benchmarks/worker.py).
"""

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class Worker:
    """One contender in its own process (see benchmarks/worker.py for the protocol).

    A worker that fails to start, or dies later, is no longer `alive`; `error` then
    holds the end of its standard error. Standard error goes to a file, not a pipe,
    so a chatty contender (compiler warnings) can never block on a full pipe.
    """

    def __init__(self, name, backend, args, env=None, wait=True):
        self.name, self.backend, self.error = name, backend, None
        env = dict(os.environ, KERAS_BACKEND=backend or "torch", PYTHONPATH=ROOT,
                   TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *args], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        if wait:
            self.wait_ready()

    def wait_ready(self):
        """Blocks until the worker has built and warmed up its contender (or failed)."""
        if not self.process.stdout.readline().strip():
            self._failed()

    @property
    def alive(self):
        return self.error is None

    @property
    def reason(self):
        """The last line of the error (usually the exception), or None."""
        lines = [line for line in (self.error or "").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ("no output" if self.error is not None else None)

    def _failed(self):
        self.process.wait()
        self.stderr.seek(0)
        self.error = self.stderr.read()[-2000:] or f"exit status {self.process.returncode}"

    def ask(self, command):
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer.strip():
            self._failed()
            raise RuntimeError(f"{self.name} died: {self.reason}")
        return float(answer)

    def close(self):
        if self.alive:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
        self.process.wait(timeout=60)
        self.stderr.close()


def start_workers(specs, at_once=None):
    """`Worker(*spec)` for each spec, started `at_once` at a time (default: one per core).

    Start-up (imports, building, compiling) is not timed, so it may overlap.
    """
    at_once = at_once or os.cpu_count()
    workers = []
    for first in range(0, len(specs), at_once):
        group = [Worker(*spec, wait=False) for spec in specs[first:first + at_once]]
        for worker in group:
            worker.wait_ready()
        workers += group
    return workers


def library_versions(names=("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy")):
    """Installed versions of the frameworks compared (those found)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def interleaved(workers, rounds, pause=0.2):
    """One timed call per worker per round, alternating; returns `{name: [seconds]}`.

    Idle workers wait on their pipe, so only one contender computes at a time. A worker
    that dies keeps the times it gave and is left out of the later rounds.
    """
    times = {w.name: [] for w in workers if w.alive}
    for _ in range(rounds):
        for worker in workers:
            if worker.alive:
                time.sleep(pause)
                try:
                    times[worker.name].append(worker.ask("run"))
                except RuntimeError as error:
                    log(str(error))
    return times


def time_workers(specs, rounds):
    """Starts `Worker(*spec)` for each spec and times `rounds` interleaved rounds.

    One round is run and discarded first (the first calls after compilation can be
    slow). Returns `({name: [seconds]}, {name: peak RSS MiB}, {name: failure})` where a
    failure is `{"status": "failed: reason", "error": end of its standard error}`.
    """
    workers = start_workers(specs)
    try:
        interleaved(workers, 1)
        times = interleaved(workers, rounds)
        rss = {}
        for worker in workers:
            if worker.alive:
                try:
                    rss[worker.name] = worker.ask("rss")
                except RuntimeError as error:
                    log(str(error))
    finally:
        for w in workers:
            w.close()
    failures = {w.name: {"status": f"failed: {w.reason}", "error": w.error} for w in workers if not w.alive}
    return times, rss, failures


def median(values):
    return statistics.median(values)


def peak_rss_mib():
    """This process's peak resident set size so far, in MiB.

    Read from VmHWM in /proc/self/status: getrusage's ru_maxrss would carry over the
    parent's peak into a worker (Linux keeps the pre-exec maximum across exec).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine_description():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        flags = ", ".join(f for f in ("avx2", "avx512f", "fma") if f" {f}" in text)
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores of {cpu} ({flags}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def log(message):
    print(message, file=sys.stderr, flush=True)
