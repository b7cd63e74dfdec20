"""The ``lrdif`` command: a thin dispatcher over one module per subcommand.

Each subcommand module defines ``configure_parser(parser)`` and ``main(args) -> int``;
it is imported only when its subcommand runs, so ``lrdif --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synthesize": ("lrdif.udc.synthesize", "turn a FER data set into its UDC version"),
    "train": ("lrdif.train.command", "train LRDif (stage 1 or 2) or a baseline from a config"),
    "evaluate": ("lrdif.evaluate.command", "measure a checkpoint on a data set split"),
    "predict": ("lrdif.predict.command", "recognise emotions in images, folders and videos"),
    "export": ("lrdif.predict.export", "export a checkpoint to ONNX"),
    "demo": ("lrdif.demo", "forward pass of an untrained LRDif on a sample face"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from lrdif.vocabulary import __version__

    parser = argparse.ArgumentParser(prog="lrdif", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lrdif {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen module is imported
            module = importlib.import_module(module_name)
            module.configure_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
