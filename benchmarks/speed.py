"""Speed of ffzoo against a plain PyTorch implementation of the same model (issue #6).

    python -m benchmarks.speed [--rounds 10] [--quick] [--contenders PATTERNS] [--output-dir DIR]

Everything runs on the CPU in float32 and is measured in the same run:

1. The machine's matrix-product peak: one 2048 x 2048 x 2048 product (2 n^3 FLOPs)
   with PyTorch and with each Keras backend's own product (TensorFlow, JAX; Keras's
   torch backend calls PyTorch's); the best GFLOP/s over the rounds, and the peak is
   the best implementation's.
2. Inference throughput: FF-Tiny at batch 32 and FF-Base at batch 8, 224 px. The
   baseline is the PyTorch reference model (references/torch_ffvit.py), eager and
   under torch.compile; ffzoo runs on each Keras backend in each compile setting of
   `benchmarks.worker.KERAS_MODES`. Every contender loads the same random weights.
   Reported: images/s from the median call, the ratio to PyTorch eager, the achieved
   GFLOP/s (analytic FLOPs of `ffzoo.complexity.count_flops`) and its share of the
   matmul peak, and each contender's peak resident memory. A backend's best mode is
   the one with the highest throughput.
3. Training throughput: FF-Tiny at batch 32, one forward, backward and AdamW step:
   ffzoo's `train_on_batch` per backend and mode against a plain PyTorch training step.
   Achieved GFLOP/s counts a training step as 3 forward passes.

Each contender runs in its own process (benchmarks/worker.py); after the warm-up
inside the worker (compilation) and one discarded round, the timed calls alternate
between contenders, so the machine's drift hits all of them alike. Every ffzoo
contender's first logits must agree with PyTorch eager's within 1e-3 (max abs
difference); disagreements are flagged in the output. A contender that fails to start
(torch.compile without a working compiler, say) is reported as "failed: reason".

Writes speed.json (machine, date, library versions, every timed call, summaries) to
--output-dir (default benchmarks/results) and prints tables.
"""

import argparse
import datetime
import fnmatch
import json
import os
import tempfile

import numpy as np

from benchmarks import harness, worker

BASELINE = "pytorch/eager"
TOLERANCE = 1e-3
TRAIN_FLOPS_FACTOR = 3  # forward + backward (about twice the forward)
DEFAULT_OUTPUT = os.path.join(harness.ROOT, "benchmarks", "results")

FULL = {"rounds": 10, "matmul_size": 2048,
        "inference": [("ffvit_tiny_patch16_224", 32), ("ffvit_base_patch16_224", 8)],
        "training": [("ffvit_tiny_patch16_224", 32)]}
QUICK = {"rounds": 2, "matmul_size": 1024,
         "inference": [("ffvit_micro_patch4_32", 4)],
         "training": [("ffvit_micro_patch4_32", 4)]}


def contenders(job):
    """`{name: (Keras backend or None, worker impl)}`: the baseline first, then ffzoo's."""
    table = {BASELINE: (None, "pytorch_eager")}
    if job == "infer":
        table["pytorch/compile"] = (None, "pytorch_compile")
    for backend, modes in worker.KERAS_MODES.items():
        for mode in modes:
            table[f"{backend}/{mode}"] = (backend, f"ffzoo_{mode}")
    return table


def select(table, patterns):
    """The entries of `table` whose name matches one of the glob `patterns` (all if None)."""
    if not patterns:
        return dict(table)
    return {name: spec for name, spec in table.items()
            if any(fnmatch.fnmatch(name, p) for p in patterns)}


def measure_matmul(backends, size, rounds):
    """Best GFLOP/s of an n^3 float32 product per implementation, and the peak."""
    specs = [("pytorch", None, ["matmul", "pytorch_eager", "--size", str(size)])]
    specs += [(b, b, ["matmul", "keras", "--size", str(size)]) for b in backends if b != "torch"]
    times, _, failures = harness.time_workers(specs, rounds)
    flops = 2 * size ** 3
    results = {name: {"status": "ok", "times_s": t, "gflops_per_s": flops / min(t) / 1e9}
               for name, t in times.items() if name not in failures}
    results.update(failures)
    rates = {name: r["gflops_per_s"] for name, r in results.items() if r["status"] == "ok"}
    peak_by = max(rates, key=rates.get)
    return {"size": size, "contenders": results, "peak_gflops_per_s": rates[peak_by], "peak_by": peak_by}


def measure_model(job, model, batch, table, rounds, peak, scratch):
    """Times `job` ("infer" or "train") of `model` for every contender of `table`."""
    from ffzoo.complexity import count_flops

    state = os.path.join(scratch, f"{model}.npz")
    if not os.path.exists(state):
        np.savez(state, **worker.reference_state(model))
    outputs = {name: os.path.join(scratch, f"{job}-{model}-{name.replace('/', '-')}.npy") for name in table}
    specs = [(name, backend, [job, impl, "--model", model, "--batch", str(batch), "--state", state]
              + (["--output", outputs[name]] if job == "infer" else []))
             for name, (backend, impl) in table.items()]
    harness.log(f"[speed] {job} {model}, batch {batch}: starting {', '.join(table)}")
    times, rss, failures = harness.time_workers(specs, rounds)
    flops = count_flops(model) * (TRAIN_FLOPS_FACTOR if job == "train" else 1)
    records = {}
    for name, (backend, impl) in table.items():
        record = {"backend": backend or "pytorch", "mode": impl.split("_", 1)[1]}
        if name in failures:
            records[name] = dict(record, **failures[name])
            continue
        seconds = harness.median(times[name])
        gflops_per_s = flops * batch / seconds / 1e9
        records[name] = dict(record, status="ok", times_s=times[name], median_s=seconds,
                             images_per_s=batch / seconds, gflops_per_s=gflops_per_s,
                             peak_fraction=gflops_per_s / peak, rss_mib=rss[name])
        if job == "train":
            records[name]["steps_per_s"] = 1 / seconds
    add_ratios(records)
    if job == "infer":
        check_agreement(records, outputs)
    return {"model": model, "batch": batch, "image_size": worker.default_image_size(model),
            "gflops_per_image": flops / 1e9,
            "contenders": records, "best": best_modes(records)}


def add_ratios(records):
    baseline = records.get(BASELINE, {}).get("images_per_s")
    for record in records.values():
        if record["status"] == "ok":
            record["ratio_vs_pytorch"] = record["images_per_s"] / baseline if baseline else None


def check_agreement(records, outputs):
    """Max abs difference of each contender's first logits from PyTorch eager's."""
    if records[BASELINE]["status"] != "ok":
        return
    reference = np.load(outputs[BASELINE])
    for name, record in records.items():
        if name == BASELINE or record["status"] != "ok":
            continue
        difference = float(np.max(np.abs(np.load(outputs[name]) - reference)))
        record["max_abs_diff_vs_pytorch"] = difference
        record["agrees"] = difference <= TOLERANCE
        if not record["agrees"]:
            harness.log(f"[speed] WARNING: {name} disagrees with {BASELINE}: max abs diff {difference:.2e}")


def best_modes(records):
    """Per backend (pytorch = the baseline), its fastest working mode."""
    best = {}
    for name, record in records.items():
        if record["status"] != "ok":
            continue
        backend = record["backend"]
        if backend not in best or record["images_per_s"] > best[backend]["images_per_s"]:
            best[backend] = {key: record.get(key) for key in
                             ("mode", "images_per_s", "steps_per_s", "ratio_vs_pytorch", "peak_fraction",
                              "rss_mib") if key in record}
    return best


def disagreements(result):
    return [f"{model['model']}: {name}" for model in result["inference"]
            for name, record in model["contenders"].items() if record.get("agrees") is False]


def print_tables(result):
    matmul = result["matmul"]
    print(f"\nMachine: {result['machine']}")
    print(f"Matrix product {matmul['size']}^3 float32, best GFLOP/s:")
    for name, record in matmul["contenders"].items():
        rate = f"{record['gflops_per_s']:8.1f}" if record["status"] == "ok" else record["status"]
        print(f"  {name:<12} {rate}")
    print(f"  peak: {matmul['peak_gflops_per_s']:.1f} GFLOP/s ({matmul['peak_by']})")
    for job in ("inference", "training"):
        for model in result[job]:
            print(f"\n{job.capitalize()}, {model['model']}, batch {model['batch']}, {model['image_size']} px "
                  f"({model['gflops_per_image']:.2f} GFLOP per image):")
            print(f"  {'contender':<18} {'images/s':>9} {'vs PyTorch':>10} {'GFLOP/s':>8} "
                  f"{'of peak':>8} {'RSS MiB':>8} {'max |diff|':>10}")
            for name, record in model["contenders"].items():
                print(f"  {name:<18} {contender_row(record)}")
            summary = ", ".join(f"{backend} {best['mode']} ({best['images_per_s']:.2f} images/s)"
                                for backend, best in model["best"].items())
            print(f"  best per backend: {summary}")


def contender_row(record):
    if record["status"] != "ok":
        return record["status"]
    ratio = f"{record['ratio_vs_pytorch']:.2f}x" if record["ratio_vs_pytorch"] else "-"
    diff = record.get("max_abs_diff_vs_pytorch")
    diff = "-" if diff is None else f"{diff:.1e}" + ("" if record["agrees"] else " DISAGREES")
    return (f"{record['images_per_s']:9.2f} {ratio:>10} {record['gflops_per_s']:8.1f} "
            f"{record['peak_fraction']:8.1%} {record['rss_mib']:8.0f} {diff:>10}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="timed rounds (default 10; 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: FF-Micro at batch 4, 1024^3 product, 2 rounds")
    parser.add_argument("--contenders", help="comma-separated glob patterns of contender names, "
                        "e.g. 'pytorch/eager,jax/*' (default: all; the baseline is always kept)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    rounds = args.rounds or settings["rounds"]
    patterns = [BASELINE] + args.contenders.split(",") if args.contenders else None
    tables = {job: select(contenders(job), patterns) for job in ("infer", "train")}
    backends = sorted({b for table in tables.values() for b, _ in table.values() if b})

    matmul = measure_matmul(backends, settings["matmul_size"], rounds)
    peak = matmul["peak_gflops_per_s"]
    with tempfile.TemporaryDirectory() as scratch:
        inference = [measure_model("infer", m, b, tables["infer"], rounds, peak, scratch)
                     for m, b in settings["inference"]]
        training = [measure_model("train", m, b, tables["train"], rounds, peak, scratch)
                    for m, b in settings["training"]]
    result = {
        "machine": harness.machine_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": harness.library_versions(),
        "quick": args.quick,
        "rounds": rounds,
        "tolerance": TOLERANCE,
        "matmul": matmul,
        "inference": inference,
        "training": training,
    }
    result["disagreements"] = disagreements(result)
    print_tables(result)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "speed.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    harness.log(f"[speed] wrote {path}")
    return result


if __name__ == "__main__":
    main()
