"""Maintainer tools for the published weights (run from the repository root; not shipped).

    python -m weights.tools table              # rewrite the table in weights/README.md
    python -m weights.tools hash PRESET FILE   # record FILE's sha256 in PRESET's row
    python -m weights.tools verify PRESET FILE # convert FILE, compare with a reference

The presets are the `PRETRAINED` rows of the model files (`ffzoo/models/<family>.py`);
`hash` writes the sha256 into that row's literal and regenerates the table. `verify`
runs the checkpoint through an independent PyTorch reference implementation in
references/ (`torch_ffvit`, `torch_deit`, `numpy_mixer`, `torch_resmlp`, `torch_gmlp`)
and through ffzoo on the current
Keras backend, and fails unless the logits agree within 1e-4.
"""

import argparse
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
README = HERE / "README.md"
MODELS_DIR = HERE.parent / "ffzoo" / "models"
BEGIN, END = "<!-- presets table: begin -->", "<!-- presets table: end -->"


def _top1(row):
    if row["top1"] is None:
        return "—"
    other = "".join(f"; {o['top1']} in {o['source']}" for o in row["top1_other"])
    return f"{row['top1']} ({row['top1_source']}{other})"


def render_table(rows):
    lines = [
        "| preset | model | format | top-1 (who reports it) | parameters | source | sha256 | "
        "preprocessing | license |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        source = f"[{row['file_name']}]({row['source_url']})" if row["source_url"] else "not published"
        sha = f"`{row['sha256'][:16]}…`" if row["sha256"] else "not recorded"
        pre = row["preprocessing"]
        prep = (f"resize {pre['resize_size']} {pre['interpolation']}, crop {pre['crop_size']} "
                f"({pre['crop_fraction']}), mean {tuple(pre['mean'])}, std {tuple(pre['std'])}"
                ) if pre else "—"
        lines.append(
            f"| `{row['name']}` | `{row['model']}` | `{row['source_format']}` | {_top1(row)} | "
            f"{row['parameters']:,} | {source} | {sha} | {prep} | {row['license'] or '—'} |"
        )
    return "\n".join(lines)


def readme_with_table(readme_text, rows):
    if BEGIN not in readme_text or END not in readme_text.split(BEGIN, 1)[1]:
        raise ValueError(f"{README} has no presets table: put the lines {BEGIN!r} and {END!r} "
                         "where it goes.")
    head, rest = readme_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_table(rows)}\n{END}{tail}"


def _rows():
    import ffzoo

    return ffzoo.weights.list_presets()


def _row(preset):
    for row in _rows():
        if preset in (row["name"], row["model"]):
            return row
    sys.exit(f"no preset {preset!r} among the models' pretrained configs "
             f"({', '.join(r['name'] for r in _rows())})")


def with_sha256(source, preset_name, digest):
    """`source` (a model file's text) with `sha256=<digest>` in the row named `preset_name`."""
    start = source.find(f'name="{preset_name}"')
    if start < 0:
        raise ValueError(f"no row name=\"{preset_name}\" in the model file")
    match = re.compile(r'sha256=(None|"[0-9a-f]{64}")').search(source, start)
    if match is None:
        raise ValueError(f"the row {preset_name!r} has no sha256=None / sha256=\"...\" entry")
    return source[:match.start()] + f'sha256="{digest}"' + source[match.end():]


def cmd_table(args):
    README.write_text(readme_with_table(README.read_text(), _rows()))
    print(f"wrote the presets table of {README}")


def cmd_hash(args):
    from ffzoo.weights.download import sha256_of

    row = _row(args.preset)
    digest = sha256_of(args.file)
    model_file = MODELS_DIR / f"{row['family']}.py"
    rows = [dict(r, sha256=digest) if r is row else r for r in _rows()]
    readme = readme_with_table(README.read_text(), rows)  # every check before writing anything
    code = with_sha256(model_file.read_text(), row["name"], digest)
    model_file.write_text(code)
    README.write_text(readme)
    print(f"{row['name']}: sha256 {digest} (written into {model_file})")
    print(f"wrote the presets table of {README}")


def _reference_logits(row, state, images):
    import numpy as np

    import ffzoo

    dims = ffzoo.models.registry.model_dims(row["model"])
    if row["family"] == "ffvit":
        import torch

        from references import torch_ffvit

        reference = torch_ffvit.FFViT(patch_size=dims["patch_size"], embed_dim=dims["embed_dim"],
                                      depth=dims["depth"], mlp_ratio=dims["mlp_ratio"],
                                      num_classes=row["classes"], image_size=dims["image_size"],
                                      pos_grid=dims["pos_grid_size"]).eval()
        reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        with torch.no_grad():
            return reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    if row["family"] == "deit":
        import torch

        from references import torch_deit

        reference = torch_deit.VisionTransformer(
            image_size=dims["image_size"], patch_size=dims["patch_size"],
            embed_dim=dims["embed_dim"], depth=dims["depth"], num_heads=dims["num_heads"],
            mlp_ratio=dims["mlp_ratio"], num_classes=row["classes"]).eval()
        reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        with torch.no_grad():
            return reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    if row["family"] == "mixer":
        from references import numpy_mixer

        return numpy_mixer.forward(state, images)
    if row["family"] in ("resmlp", "gmlp"):
        import torch

        from references import torch_gmlp, torch_resmlp

        make = torch_resmlp.resmlp if row["family"] == "resmlp" else torch_gmlp.gmlp
        reference = make(row["model"], num_classes=row["classes"]).eval()
        reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        with torch.no_grad():
            return reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    raise ValueError(f"no reference implementation for the {row['family']} family")


def cmd_verify(args):
    import numpy as np

    import ffzoo

    row = _row(args.preset)
    state = ffzoo.weights.loading.read_checkpoint(
        args.file, ema=row.get("source_entry") == "model_ema")
    model = ffzoo.create_model(row["model"], classes=row["classes"], classifier_activation=None)
    ffzoo.weights.load_state_dict(model, state, row["source_format"], source=args.file)
    size = ffzoo.models.registry.model_dims(row["model"])["image_size"]
    images = np.random.default_rng(0).standard_normal((4, size, size, 3)).astype("float32")
    want = _reference_logits(row, state, images)
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    print(f"{row['name']}: max |logit difference| vs the reference = {diff:.3g}")
    if diff > 1e-4:
        sys.exit("verification FAILED (bound 1e-4)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m weights.tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("table", help="regenerate the README table").set_defaults(run=cmd_table)
    for name, run, text in [("hash", cmd_hash, "record a file's sha256"),
                            ("verify", cmd_verify, "compare converted logits with a reference")]:
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
