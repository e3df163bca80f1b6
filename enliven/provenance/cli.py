"""The ``enliven verify`` subcommand and the provenance options of ``enliven animate``."""
from __future__ import annotations

import argparse

from enliven.provenance.c2pa_sign import CERT_ENV, KEY_ENV
from enliven.provenance.output import ProvenanceOptions
from enliven.provenance.verify import verify_file


def add_provenance_options(parser: argparse.ArgumentParser) -> None:
    """--c2pa-cert, --c2pa-key, --no-c2pa on a command that writes files."""
    parser.add_argument("--c2pa-cert", default=None,
                        help=f"PEM certificate chain (signer first) to sign the C2PA manifest with (or ${CERT_ENV}); "
                             "default: a development certificate made on first use, trusted by no validator")
    parser.add_argument("--c2pa-key", default=None, help=f"PEM private key of that certificate (or ${KEY_ENV})")
    parser.add_argument("--no-c2pa", action="store_true",
                        help="write no C2PA manifest (the invisible watermark is always there)")


def provenance_options(args: argparse.Namespace) -> ProvenanceOptions:
    return ProvenanceOptions(c2pa=not args.no_c2pa, c2pa_cert=args.c2pa_cert, c2pa_key=args.c2pa_key)


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify_file(args.file)
    print(report.summary())
    return 0 if report.found else 1


def add_verify_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    v = sub.add_parser("verify", help="is an image or video marked by enliven? (watermark and C2PA manifest)",
                       description="Looks for enliven's invisible watermark and C2PA manifest. Exit status: "
                                   "0 watermark found, 1 not found, 2 unreadable input.")
    v.add_argument("file", help="an image (PNG, JPEG, WebP) or a video (MP4, MOV, MKV, WebM, AVI, MPEG-TS)")
    v.set_defaults(func=_cmd_verify)
