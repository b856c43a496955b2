"""The `ffzoo` command line."""

import argparse
import sys


def _cmd_models(args):
    import ffzoo

    print(f"{'model':<28} {'parameters':>13}")
    for name in ffzoo.list_models(args.pattern):
        model = ffzoo.create_model(name)
        print(f"{name:<28} {model.count_params():>13,}")


def build_parser():
    parser = argparse.ArgumentParser(prog="ffzoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'ffvit_*'")
    models.set_defaults(run=_cmd_models)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
