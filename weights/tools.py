"""Maintainer tools for the weights manifest (run from the repository root).

    python -m weights.tools table              # rewrite the table in weights/README.md
    python -m weights.tools hash PRESET FILE   # record FILE's sha256 for PRESET
    python -m weights.tools verify PRESET FILE # convert FILE, compare with PyTorch

`verify` runs the checkpoint through the PyTorch reference implementation in
references/ and through ffzoo on the current Keras backend, and fails unless
the logits agree within 1e-4.
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
README = HERE / "README.md"
BEGIN, END = "<!-- presets table: begin -->", "<!-- presets table: end -->"


def render_table(rows):
    lines = [
        "| preset | model | top-1 (paper) | parameters | source | sha256 | preprocessing | license |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        source = f"[{row['file_name']}]({row['source_url']})" if row["source_url"] else "not published"
        sha = f"`{row['sha256'][:16]}…`" if row["sha256"] else "not recorded"
        pre = row["preprocessing"]
        prep = (f"resize {pre['resize_size']} {pre['interpolation']}, crop {pre['crop_size']}, "
                f"mean {tuple(pre['mean'])}, std {tuple(pre['std'])}") if pre else "—"
        lines.append(
            f"| `{row['name']}` | `{row['model']}` | {row['top1'] or '—'} | {row['parameters']:,} | "
            f"{source} | {sha} | {prep} | {row['license'] or '—'} |"
        )
    return "\n".join(lines)


def readme_with_table(readme_text, rows):
    if BEGIN not in readme_text or END not in readme_text.split(BEGIN, 1)[1]:
        raise ValueError(f"{README} has no presets table: put the lines {BEGIN!r} and {END!r} "
                         "where it goes.")
    head, rest = readme_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_table(rows)}\n{END}{tail}"


def _load():
    return json.loads(MANIFEST.read_text())


def _row(manifest, preset):
    for row in manifest["presets"]:
        if preset in (row["name"], row["model"]):
            return row
    sys.exit(f"no preset {preset!r} in {MANIFEST}")


def cmd_table(args):
    README.write_text(readme_with_table(README.read_text(), _load()["presets"]))
    print(f"wrote the presets table of {README}")


def cmd_hash(args):
    sys.path.insert(0, str(HERE.parent))
    from ffzoo.weights.download import sha256_of

    manifest = _load()
    row = _row(manifest, args.preset)
    row["sha256"] = sha256_of(args.file)
    readme = readme_with_table(README.read_text(), manifest["presets"])  # before writing anything
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    README.write_text(readme)
    print(f"{row['name']}: sha256 {row['sha256']}")
    print(f"wrote the presets table of {README}")


def cmd_verify(args):
    sys.path.insert(0, str(HERE.parent))
    import numpy as np
    import torch

    import ffzoo
    from references.torch_ffvit import FFViT as TorchFFViT

    row = _row(_load(), args.preset)
    state = ffzoo.weights.read_state_dict(args.file, ema=row.get("source_entry") == "model_ema")
    dims = ffzoo.models.ffvit.FFVIT_VARIANTS[row["model"]]
    reference = TorchFFViT(patch_size=dims["patch_size"], embed_dim=dims["embed_dim"],
                           depth=dims["depth"], mlp_ratio=dims["mlp_ratio"],
                           num_classes=row["classes"], image_size=dims["image_size"],
                           pos_grid=dims["pos_grid_size"]).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model = ffzoo.create_model(row["model"], classes=row["classes"], classifier_activation=None)
    ffzoo.weights.convert.load_ffvit_state_dict(model, state, source=args.file)
    size = dims["image_size"]
    images = np.random.default_rng(0).standard_normal((4, size, size, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    print(f"{row['name']}: max |logit difference| vs PyTorch = {diff:.3g}")
    if diff > 1e-4:
        sys.exit("verification FAILED (bound 1e-4)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m weights.tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("table", help="regenerate the README table").set_defaults(run=cmd_table)
    for name, run, text in [("hash", cmd_hash, "record a file's sha256"),
                            ("verify", cmd_verify, "compare converted logits with PyTorch")]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("preset")
        sub.add_argument("file")
        sub.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:  # a bad file or README: one line, no traceback
        sys.exit(f"python -m weights.tools {args.command}: {error}")


if __name__ == "__main__":
    main()
