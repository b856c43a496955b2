"""Every benchmark in one command, then the README's performance section.

    python -m benchmarks.run_all [--skip-input-pipeline] [--quick] [--render-only] [--output-dir DIR]

Runs benchmarks.input_pipeline, benchmarks.speed and benchmarks.scaling one after the
other (each in its own process; their JSON and the scaling plot go to --output-dir,
default benchmarks/results), then renders the results as markdown and puts it between
the README's `<!-- performance:start -->` and `<!-- performance:end -->` markers. With
--skip-input-pipeline, an input_pipeline.json left by an earlier run is still shown.
With --render-only nothing runs: the section is rebuilt from the JSON files already in
--output-dir (each part names the machine and date it was measured on). With --quick
(smoke-test sizes) or when the README lacks the markers, the section is printed
instead and the README is left alone.
"""

import argparse
import json
import os
import subprocess
import sys

from benchmarks import harness

DEFAULT_OUTPUT = os.path.join(harness.ROOT, "benchmarks", "results")
README = os.path.join(harness.ROOT, "README.md")
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
BACKEND_NAMES = {"pytorch": "PyTorch baseline", "tensorflow": "ffzoo, TensorFlow",
                 "jax": "ffzoo, JAX", "torch": "ffzoo, PyTorch (Keras torch backend)"}
MODEL_NAMES = {"ffvit_tiny_patch16_224": "FF-Tiny", "ffvit_base_patch16_224": "FF-Base",
               "ffvit_micro_patch4_32": "FF-Micro"}
QUICK_INPUT_PIPELINE = ["--images", "200", "--rounds", "1", "--train-steps", "2", "--batch", "16"]


def run(module, *args):
    harness.log(f"[run_all] python -m {module} {' '.join(args)}")
    subprocess.run([sys.executable, "-m", module, *args], cwd=harness.ROOT, check=True)


def load_results(directory):
    """`{"speed": ..., "scaling": ..., "input_pipeline": ...}`, None where a file is missing."""
    results = {}
    for name in ("speed", "scaling", "input_pipeline"):
        path = os.path.join(directory, f"{name}.json")
        results[name] = None
        if os.path.exists(path):
            with open(path) as f:
                results[name] = json.load(f)
    return results


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def model_title(entry):
    return f"{MODEL_NAMES.get(entry['model'], entry['model'])}, batch {entry['batch']}, {entry['image_size']} px"


def rate_text(record, unit="img/s"):
    """`120 img/s, 1.26x, 40% of peak` from a measured record or a best-mode summary."""
    rate = record["steps_per_s"] if unit == "steps/s" else record["images_per_s"]
    ratio = record.get("ratio_vs_pytorch")
    ratio = f"{ratio:.2f}x" if ratio else "-"
    return f"{rate:.3g} {unit}, {ratio}, {record['peak_fraction']:.0%} of peak"


def rate_cell(record, unit="img/s"):
    """A contender's cell: its rate, or why it has none; a disagreement is flagged."""
    if record is None:
        return "-"
    if record["status"] != "ok":
        return record["status"]
    cell = rate_text(record, unit)
    if record.get("agrees") is False:
        cell += f" (**disagrees**: {record['max_abs_diff_vs_pytorch']:.1e})"
    return cell


def rss_cell(record):
    return f"{record['rss_mib']:.0f}" if record and record["status"] == "ok" else "-"


def speed_header(speed):
    versions = ", ".join(f"{k} {v}" for k, v in speed["versions"].items())
    matmul = speed["matmul"]
    return (f"Measured on {speed['machine']}, {speed['date'][:10]}; float32 on the CPU; {versions}. "
            f"Each contender runs in its own process and their timed calls alternate "
            f"({speed['rounds']} rounds, medians), so the machine's drift hits all of them alike. "
            f"The baseline is a plain PyTorch implementation of the same model with the same "
            f"weights (`references/torch_ffvit.py`); ratios are to its eager mode. "
            f"Matrix-product peak of this machine ({matmul['size']}^3 float32, measured in the same run): "
            f"**{matmul['peak_gflops_per_s']:.0f} GFLOP/s** ({matmul['peak_by']}); "
            f"\"of peak\" is the achieved GFLOP/s (analytic FLOPs) over that peak.")


def inference_tables(inference):
    backends = list(dict.fromkeys(b for entry in inference for b in entry["best"]))
    best_rows = [[BACKEND_NAMES.get(b, b)] +
                 [f"{rate_text(entry['best'][b])} ({entry['best'][b]['mode']})" if b in entry["best"]
                  else "failed" for entry in inference]
                 for b in backends]
    best = table(["Backend (best mode)"] + [model_title(e) for e in inference], best_rows)
    names = list(dict.fromkeys(name for entry in inference for name in entry["contenders"]))
    header = ["Contender"]
    for entry in inference:
        header += [model_title(entry), "peak RSS MiB"]
    rows = []
    for name in names:
        row = [name]
        for entry in inference:
            record = entry["contenders"].get(name)
            row += [rate_cell(record), rss_cell(record)]
        rows.append(row)
    return best + "\n\nEvery contender (`backend/mode`; `pytorch/*` is the baseline):\n\n" + table(header, rows)


def training_table(training):
    header = ["Contender"]
    for entry in training:
        header += [model_title(entry), "peak RSS MiB"]
    names = list(dict.fromkeys(name for entry in training for name in entry["contenders"]))
    rows = []
    for name in names:
        row = [name]
        for entry in training:
            record = entry["contenders"].get(name)
            row += [rate_cell(record, "steps/s"), rss_cell(record)]
        rows.append(row)
    return table(header, rows)


def speed_section(speed):
    parts = [speed_header(speed), "",
             "**Inference** (images/s, ratio to PyTorch eager, share of the matmul peak):", "",
             inference_tables(speed["inference"]), "",
             "**Training**, forward + backward + AdamW (`train_on_batch` against a plain PyTorch "
             "step; a step counts as 3 forward passes of FLOPs):", "",
             training_table(speed["training"])]
    if speed["disagreements"]:
        parts += ["", f"**Warning**: outputs differ from PyTorch's by more than {speed['tolerance']:g}: "
                  + ", ".join(speed["disagreements"]) + "."]
    else:
        parts += ["", f"Every ffzoo contender's logits agree with PyTorch's within {speed['tolerance']:g}."]
    return "\n".join(parts)


def rounds(train, evaluation):
    """`; round by round 1.27-1.32 and 1.14-1.17` (the spread of the ratios), or nothing."""
    if not train or not evaluation:
        return ""
    return (f"; round by round {min(train):.2f}-{max(train):.2f} and "
            f"{min(evaluation):.2f}-{max(evaluation):.2f}")


def input_pipeline_section(pipeline):
    rates = ", ".join(f"{name}: {rate:.0f}" for name, rate in pipeline["images_per_s"].items())
    measured = pipeline["machine"] + (f", {pipeline['date'][:10]}" if "date" in pipeline else "")
    return (f"**Input pipeline** ({pipeline['images']} JPEGs, batch {pipeline['batch']}, {pipeline['backend']}, "
            f"measured on {measured}): "
            f"`ffzoo.data` against a PyTorch `DataLoader` doing the same work, "
            f"{pipeline['train_ratio_vs_pytorch']:.2f}x for the training transform and "
            f"{pipeline['eval_ratio_vs_pytorch']:.2f}x for the evaluation transform (best epochs"
            f"{rounds(pipeline.get('train_ratio_per_round'), pipeline.get('eval_ratio_per_round'))}); "
            f"FF-Tiny training "
            f"fed by the pipeline runs at {pipeline['fit_pipeline_over_memory']:.0%} of its speed on "
            f"batches held in memory. Images/s: {rates}.")


def point_cell(point):
    return f"{point['seconds_per_image'] * 1e3:.1f} ms" if point["status"] == "ok" else point["status"]


def exponent_cell(value):
    return "-" if value is None else f"{value:.2f}"


def scaling_section(scaling, image):
    curves = list(scaling["curves"].values())
    rows = [[f"{size} px ({curves[0]['points'][str(size)]['tokens']})"] +
            [point_cell(c["points"][str(size)]) for c in curves] for size in scaling["sizes"]]
    rows.append(["exponent k, measured"] + [exponent_cell(c["exponent"]) for c in curves])
    rows.append(["exponent k of the FLOPs"] + [exponent_cell(c["flops_exponent"]) for c in curves])
    return "\n".join([
        f"**Scaling with the token count**: inference time per image ({scaling['backend']} {scaling['mode']}, "
        f"batch {scaling['batch']}, {scaling['rounds']} rounds), fitted as time ~ tokens^k:",
        "", table(["Input (tokens)"] + [c["label"] for c in curves], rows), "", f"![scaling]({image})"])


def render_markdown(results, image="benchmarks/results/scaling.png"):
    """The README's performance section from `load_results(...)` (parts may be None)."""
    parts = ["<!-- generated by `python -m benchmarks.run_all`; do not edit by hand -->"]
    if results.get("speed"):
        parts.append(speed_section(results["speed"]))
    if results.get("input_pipeline"):
        parts.append(input_pipeline_section(results["input_pipeline"]))
    if results.get("scaling"):
        parts.append(scaling_section(results["scaling"], image))
    return "\n\n".join(parts) + "\n"


def replace_section(text, markdown):
    """`text` with the lines between the markers replaced, or None without the markers."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[:start + len(START)] + "\n" + markdown + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-input-pipeline", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes; prints, never edits the README")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing; rebuild the README section from --output-dir's JSON files")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output_dir)
    quick = ["--quick"] if args.quick else []
    os.makedirs(output, exist_ok=True)
    if not args.render_only:
        if not args.skip_input_pipeline:
            run("benchmarks.input_pipeline", "--output", os.path.join(output, "input_pipeline.json"),
                *(QUICK_INPUT_PIPELINE if args.quick else []))
        run("benchmarks.speed", "--output-dir", output, *quick)
        run("benchmarks.scaling", "--output-dir", output, *quick)
    image = os.path.relpath(os.path.join(output, "scaling.png"), os.path.dirname(README))
    markdown = render_markdown(load_results(output), image)
    with open(README) as f:
        updated = replace_section(f.read(), markdown)
    if args.quick or updated is None:
        reason = "--quick" if args.quick else f"README.md lacks the {START} / {END} markers"
        print(f"{markdown}\n[run_all] README.md not changed ({reason}); the section is above.")
        return markdown
    with open(README, "w") as f:
        f.write(updated)
    harness.log("[run_all] README.md performance section updated")
    return markdown


if __name__ == "__main__":
    main()
