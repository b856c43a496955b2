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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class Worker:
    """One contender in its own process (see benchmarks/worker.py for the protocol)."""

    def __init__(self, name, backend, args, env=None):
        self.name, self.backend, self.error = name, backend, None
        env = dict(os.environ, KERAS_BACKEND=backend or "torch", PYTHONPATH=ROOT,
                   TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *args], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        if not ready.strip():
            self.error = self.process.stderr.read()[-2000:]
            self.process.wait()

    @property
    def alive(self):
        return self.error is None

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        if self.alive:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
        self.process.wait(timeout=60)


def interleaved(workers, rounds, pause=0.2):
    """One timed call per worker per round, alternating; returns `{name: [seconds]}`.

    Idle workers wait on their pipe, so only one contender computes at a time.
    """
    times = {w.name: [] for w in workers if w.alive}
    for _ in range(rounds):
        for worker in workers:
            if worker.alive:
                time.sleep(pause)
                times[worker.name].append(worker.ask("run"))
    return times


def median(values):
    return statistics.median(values)


def peak_rss_mib():
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
