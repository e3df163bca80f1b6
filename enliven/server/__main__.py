"""``python -m enliven.server [options]``: the same as ``enliven serve`` (tests start the server this way)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from enliven.engine.errors import EnlivenError

from .cli import add_serve_parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m enliven.server")
    sub = parser.add_subparsers(dest="command")
    add_serve_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EnlivenError as e:
        print(f"enliven: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
