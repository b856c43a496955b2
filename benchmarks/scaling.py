"""How inference time grows with the token count: FF token mixing against attention.

    python -m benchmarks.scaling [--backend jax] [--mode jit] [--batch 4] [--rounds 5]
                                 [--quick] [--output-dir DIR]

Times one inference call per image (float32, CPU) at input sizes 224 to 512 px, that
is 197 to 1025 tokens with 16 px patches, for three Tiny models with random weights:
- FF-Tiny as in the paper, its token FFs 4 x the token count wide (cost ~ tokens^2);
- FF-Tiny with the token FFs' width fixed at 788 (4 x 197; cost ~ tokens);
- DeiT-Tiny, with attention (cost ~ tokens plus a tokens^2 term).
All of them run on one Keras backend and compile mode (default JAX, jit), each model
and size in its own worker process, timed call by call in turn (benchmarks/harness.py),
so the machine's drift hits every point alike. Time per image is the median call over
the batch.

Each curve's growth exponent k in time ~ tokens^k is a least-squares line through
(log tokens, log time); the same fit through the analytic FLOPs
(`ffzoo.complexity.count_flops`) gives the exponent the arithmetic alone predicts.
Writes scaling.json and scaling.png (log-log, fitted exponents in the legend) to
--output-dir (default benchmarks/results) and prints a table.
"""

import argparse
import datetime
import json
import os

import numpy as np

from benchmarks import harness

DEFAULT_OUTPUT = os.path.join(harness.ROOT, "benchmarks", "results")
PATCH = 16
SIZES = (224, 288, 352, 416, 480, 512)
QUICK_SIZES = (32, 64)
CURVES = {
    "ff_paper": {"label": "FF-Tiny, token FFs 4 x tokens wide (paper)",
                 "model": "ffvit_tiny_patch16_224", "token_mlp_dim": None},
    "ff_fixed": {"label": "FF-Tiny, token FFs 788 wide (fixed)",
                 "model": "ffvit_tiny_patch16_224", "token_mlp_dim": 788},
    "attention": {"label": "DeiT-Tiny (attention)",
                  "model": "deit_tiny_patch16_224", "token_mlp_dim": None},
}


def tokens(size):
    return 1 + (size // PATCH) ** 2


def fit_exponent(token_counts, seconds):
    """`(k, c)` of the least-squares fit of log(seconds) = log(c) + k log(tokens)."""
    k, log_c = np.polyfit(np.log(token_counts), np.log(seconds), 1)
    return float(k), float(np.exp(log_c))


def worker_spec(curve, size, backend, mode, batch):
    spec = CURVES[curve]
    args = ["infer", f"ffzoo_{mode}", "--model", spec["model"], "--batch", str(batch),
            "--image-size", str(size)]
    if spec["token_mlp_dim"] is not None:
        args += ["--token-mlp-dim", str(spec["token_mlp_dim"])]
    return f"{curve}@{size}", backend, args


def summarize(curve, sizes, times, failures, batch):
    """One curve's per-image times, FLOPs and fitted exponents from the raw times."""
    from ffzoo.complexity import count_flops

    spec = CURVES[curve]
    points = {}
    for size in sizes:
        name = f"{curve}@{size}"
        flops = count_flops(spec["model"], image_size=size, token_mlp_dim=spec["token_mlp_dim"])
        point = {"size": size, "tokens": tokens(size), "gflops_per_image": flops / 1e9}
        if name in failures:
            point.update(failures[name])
        else:
            point.update(status="ok", times_s=times[name],
                         seconds_per_image=harness.median(times[name]) / batch)
        points[str(size)] = point
    ok = [p for p in points.values() if p["status"] == "ok"]
    summary = dict(spec, points=points, exponent=None, prefactor=None)
    summary["flops_exponent"] = fit_exponent([p["tokens"] for p in points.values()],
                                             [p["gflops_per_image"] for p in points.values()])[0]
    if len(ok) >= 2:
        summary["exponent"], summary["prefactor"] = fit_exponent(
            [p["tokens"] for p in ok], [p["seconds_per_image"] for p in ok])
    return summary


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for curve in result["curves"].values():
        ok = [p for p in curve["points"].values() if p["status"] == "ok"]
        if not ok:
            continue
        x = np.array([p["tokens"] for p in ok])
        y = np.array([p["seconds_per_image"] for p in ok]) * 1e3
        label = curve["label"]
        if curve["exponent"] is not None:
            label += f": k = {curve['exponent']:.2f} (FLOPs {curve['flops_exponent']:.2f})"
            fitted = curve["prefactor"] * x.astype(float) ** curve["exponent"] * 1e3
            line, = axes.plot(x, fitted, "--", linewidth=1)
            axes.plot(x, y, "o", color=line.get_color(), label=label)
        else:
            axes.plot(x, y, "o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("tokens (input size / 16)^2 + 1")
    axes.set_ylabel("inference time per image (ms)")
    axes.set_title(f"Time ~ tokens^k, {result['backend']} {result['mode']}, batch {result['batch']}, float32 CPU")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_table(result):
    curves = result["curves"]
    print(f"\nMachine: {result['machine']}")
    print(f"Inference ms per image, {result['backend']} {result['mode']}, batch {result['batch']}:")
    print(f"  {'size':>5} {'tokens':>6} " + " ".join(f"{key:>12}" for key in curves))
    for size in result["sizes"]:
        cells = []
        for curve in curves.values():
            point = curve["points"][str(size)]
            cells.append(f"{point['seconds_per_image'] * 1e3:12.1f}" if point["status"] == "ok" else f"{'failed':>12}")
        print(f"  {size:>5} {tokens(size):>6} " + " ".join(cells))
    for key, title in (("exponent", "k measured"), ("flops_exponent", "k of FLOPs")):
        cells = " ".join("           -" if c[key] is None else f"{c[key]:12.2f}" for c in curves.values())
        print(f"  {title:>12} {cells}")
    for key, curve in curves.items():
        failed = [p["status"] for p in curve["points"].values() if p["status"] != "ok"]
        if failed:
            print(f"  {key}: {failed[0]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="jax", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--mode", default="jit", help="a mode of benchmarks.worker.KERAS_MODES[backend]")
    parser.add_argument("--batch", type=int, help="images per call (default 4; 1 with --quick)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: sizes {QUICK_SIZES}, batch 1")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    batch = args.batch or (1 if args.quick else 4)
    rounds = args.rounds or (2 if args.quick else 5)

    specs = [worker_spec(curve, size, args.backend, args.mode, batch) for size in sizes for curve in CURVES]
    harness.log(f"[scaling] starting {len(specs)} workers ({args.backend} {args.mode}, batch {batch})")
    times, _, failures = harness.time_workers(specs, rounds)
    result = {
        "machine": harness.machine_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": harness.library_versions(),
        "quick": args.quick,
        "backend": args.backend,
        "mode": args.mode,
        "batch": batch,
        "rounds": rounds,
        "sizes": list(sizes),
        "curves": {curve: summarize(curve, sizes, times, failures, batch) for curve in CURVES},
    }
    print_table(result)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "scaling.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.output_dir, "scaling.png"))
    harness.log(f"[scaling] wrote scaling.json and scaling.png to {args.output_dir}")
    return result


if __name__ == "__main__":
    main()
