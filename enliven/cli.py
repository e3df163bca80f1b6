"""The ``enliven`` command line: serve, animate, train, evaluate, export, verify.

Benchmarks are modules of the checkout (``python -m benchmarks.frame_path``), not commands.

With no arguments it animates the built-in photo with the built-in motion into enliven-demo.mp4
(``bash run.sh`` with no arguments starts the server instead).
Errors the user can fix are printed as one line (no traceback) with exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .engine.choices import CROP_SIZES_PX, DEFAULT_CROP_SIZE_PX, DEFAULT_ENGINE, ENGINES
from .engine.errors import EnlivenError
from .output_formats import check_side_output, formats_help, resolve_output
from .provenance.cli import add_provenance_options, add_verify_parser, provenance_options

DEFAULT_DEMO_OUTPUT = "enliven-demo.mp4"


def _cmd_animate(args: argparse.Namespace) -> int:
    # The outputs are checked first: a path that would replace an input, or that cannot be written, is
    # refused before the models load and the frames are animated.
    inputs = {"photo": args.photo, "driving video": args.driving}
    output = resolve_output(args.output or DEFAULT_DEMO_OUTPUT, inputs)
    if args.strip:
        check_side_output(args.strip, {**inputs, "output": output.path}, "the strip")

    from .animation.animator import AnimatorConfig
    from .engine.motion import EyesMode, MotionGains, TransferMode
    from .offline import animate_builtin, animate_video

    config = AnimatorConfig(crop_size_px=args.size, mode=TransferMode(args.mode), output=args.output_kind,
                            engine=args.engine, gains=MotionGains.from_mapping(dict(args.gain)),
                            eyes=EyesMode(args.eyes))
    provenance = provenance_options(args)
    if args.driving is None:
        report = animate_builtin(args.photo, output, config, strip=args.strip, progress=not args.no_progress,
                                 provenance=provenance)
    else:
        report = animate_video(args.photo, args.driving, output, config, strip=args.strip,
                               progress=not args.no_progress, provenance=provenance)
    print(report.summary())
    return 0


def _gain_arg(text: str) -> tuple[str, float]:
    """One ``--gain NAME=VALUE``, checked against MotionGains (names and ranges)."""
    from .engine.motion import MotionGains

    name, sep, value = (part.strip() for part in text.partition("="))
    try:
        if not sep:
            raise ValueError(f"expected NAME=VALUE, e.g. mouth=1.3; got {text!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"gain {name} must be a number; got {value!r}") from None
        MotionGains.from_mapping({name: number})
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return name, number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enliven", description="Real-time portrait animation: a photo driven by a face.")
    parser.add_argument("--version", action="version", version=f"enliven {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command")


    p = sub.add_parser("animate", help="animate a photo with a driving video (or the built-in motion)",
                       description="Animate a photo with a driving video (or the built-in motion). The output's "
                                   f"format follows its extension: {formats_help()}. Every format is marked as "
                                   "AI-generated in its metadata. An output that would replace the photo or the "
                                   "video, or that cannot be written, is refused before any work.")
    p.add_argument("photo", nargs="?", default=None, help="portrait photo (JPEG/PNG/WebP); default: built-in")
    p.add_argument("driving", nargs="?", default=None, help="driving video; default: built-in motion")
    p.add_argument("-o", "--output", default=None,
                   help=f"output file (.mp4, .mov, .webm, .gif) or folder for PNG frames (a path ending in /); "
                        f"default {DEFAULT_DEMO_OUTPUT}")
    p.add_argument("--size", type=int, default=DEFAULT_CROP_SIZE_PX, choices=CROP_SIZES_PX, help="face crop size in pixels")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="mode", action="store_const", const="relative",
                      help="transfer motion relative to the driver's neutral frame (default)")
    mode.add_argument("--absolute", dest="mode", action="store_const", const="absolute",
                      help="the head takes the driver's absolute orientation")
    p.set_defaults(mode="relative")
    p.add_argument("--crop", dest="output_kind", action="store_const", const="crop", default="photo",
                   help="write the animated face crop instead of the whole photo")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help="trained: the shipped learned generator refines the warp (default); analytic: warp only")
    p.add_argument("--gain", type=_gain_arg, action="append", default=[], metavar="NAME=VALUE",
                   help="strength of one motion channel, 0 (the photo's own) .. 1 (as the driver, the default) .. "
                        "more (exaggerated): head_rotation, head_position (up to 1.5), eyes, gaze, brows, mouth "
                        "(up to 2); repeat for several")
    p.add_argument("--eyes", choices=("follow", "open", "auto-blink"), default="follow",
                   help="the lids: follow the driver's (default), keep the photo's open eyes, or keep them and "
                        "blink at a natural rhythm")
    p.add_argument("--strip", default=None, help="also save a PNG strip source | driver | output here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_provenance_options(p)
    p.set_defaults(func=_cmd_animate)

    from .evaluate.cli import add_evaluate_parser
    from .export.cli import add_export_parser
    from .server.cli import add_serve_parser
    from .train.cli import add_train_parser

    add_serve_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_verify_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``enliven`` console script."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if not any(a in commands or a in ("-h", "--help", "--version") for a in argv):
        argv = ["animate", *argv]  # no command: the built-in demo, `enliven -o x.mp4` included
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EnlivenError as e:
        print(f"enliven: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("enliven: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
