"""The ``serve`` subcommand: ``add_serve_parser(subparsers)`` registers it on the ``enliven`` CLI."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from enliven.engine.choices import CROP_SIZES_PX, ENGINES, FACE_REFINERS
from enliven.engine.errors import EnlivenError

from .config import PRECISIONS, ClusterConfig, ServerConfig

logger = logging.getLogger(__name__)
_DEFAULT = ServerConfig()


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``argparse`` subparsers object; its ``func`` default runs the server."""
    p = subparsers.add_parser("serve", help="run the web page and WebRTC server (webcam drives the photo live)",
                              description="Serve the enliven page: open the printed URL in a browser, allow the "
                                          "webcam, and the photo moves as you do.")
    p.add_argument("--host", default=_DEFAULT.host,
                   help=f"interface to listen on (default {_DEFAULT.host}; browsers allow the webcam only on "
                        "localhost or over https)")
    p.add_argument("--port", type=int, default=_DEFAULT.port, help=f"TCP port (default {_DEFAULT.port}; 0 = any)")
    p.add_argument("--max-sessions", type=int, default=_DEFAULT.max_sessions,
                   help=f"sessions at once; more get 503 (default {_DEFAULT.max_sessions})")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="inference worker processes (default: one per CPU core, at most --max-sessions; "
                        "0 = threads inside the server process)")
    p.add_argument("--engine", choices=ENGINES, default=_DEFAULT.engine,
                   help=f"engine of new sessions (default {_DEFAULT.engine}; the page can switch it live)")
    p.add_argument("--precision", choices=PRECISIONS, default=_DEFAULT.precision,
                   help=f"of the trained refiner (default {_DEFAULT.precision}: about half the CPU of fp32 for "
                        "0.04 dB less face PSNR)")
    p.add_argument("--refiner", choices=FACE_REFINERS, default=_DEFAULT.refiner,
                   help=f"the trained engine's face refiner (default {_DEFAULT.refiner}: refiner128 distilled, ~40 %% "
                        "less refiner CPU for 0.06 dB less face PSNR on val; refiner128: the full one)")
    p.add_argument("--size", type=int, choices=CROP_SIZES_PX, default=_DEFAULT.crop_size_px,
                   help=f"default output size in pixels (default {_DEFAULT.crop_size_px})")
    p.add_argument("--idle-timeout", type=float, default=_DEFAULT.idle_timeout_s, metavar="S",
                   help=f"end a session with no webcam frames for S seconds (default {_DEFAULT.idle_timeout_s:g})")
    p.add_argument("--offer-timeout", type=float, default=_DEFAULT.offer_timeout_s, metavar="S",
                   help=argparse.SUPPRESS)
    p.add_argument("--connect-timeout", type=float, default=_DEFAULT.connect_timeout_s, metavar="S",
                   help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-timeout", type=float, default=_DEFAULT.heartbeat_timeout_s, metavar="S",
                   help=argparse.SUPPRESS)
    p.add_argument("--create-rate", type=float, default=_DEFAULT.create_rate_per_min, metavar="N",
                   help=f"session creations per client address per minute (default {_DEFAULT.create_rate_per_min:g})")
    p.add_argument("--create-burst", type=int, default=_DEFAULT.create_burst, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--offer-rate", type=float, default=_DEFAULT.offer_rate_per_min, metavar="N",
                   help=argparse.SUPPRESS)
    p.add_argument("--offer-burst", type=int, default=_DEFAULT.offer_burst, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--max-sessions-per-client", type=int, default=_DEFAULT.max_sessions_per_client, metavar="N",
                   help=f"live sessions of one client address (default {_DEFAULT.max_sessions_per_client})")
    p.add_argument("--max-session-length", type=float, default=_DEFAULT.max_session_s, metavar="S",
                   help=f"end every session after S seconds (default {_DEFAULT.max_session_s:g})")
    p.add_argument("--body-timeout", type=float, default=_DEFAULT.body_timeout_s, metavar="S",
                   help=argparse.SUPPRESS)
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another page origin allowed to call the API (repeatable), e.g. https://example.org")
    p.add_argument("--landmarks-only", action="store_true",
                   help="take face points only: pages must run the face landmarker in the browser; offers that "
                        "send camera video are refused (the camera's pictures never leave the user's device)")
    p.add_argument("--cluster", default=None, metavar="ray[:ADDRESS]",
                   help="run each live session as a Ray actor on a cluster node with a free session slot "
                        "(needs the cluster extra: pip install 'enliven[cluster]'): ray:auto or ray:HOST:PORT joins "
                        "a running cluster, plain ray starts a private one on this machine; see docs/deploy.md")
    p.add_argument("--cluster-wait", type=float, default=ClusterConfig.wait_s, metavar="S",
                   help=f"with --cluster: how long a new session waits for a free slot before 503 "
                        f"(default {ClusterConfig.wait_s:g})")
    p.add_argument("--cluster-gpus", type=float, default=ClusterConfig.gpus_per_session, metavar="F",
                   help="with --cluster: the GPU share each session reserves (0 = any node, the default; "
                        "e.g. 0.25 = four sessions per GPU, on GPU nodes only)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the server answers to besides localhost and IP addresses (repeatable; "
                        "e.g. the name an https proxy forwards): a guard against DNS rebinding")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                   help="a proxy's address or network (repeatable): only from it is X-Forwarded-For believed "
                        "for rate limits and the per-client session cap")
    p.add_argument("--ice-address", action="append", default=[], metavar="ADDR",
                   help="a local address announced for media (repeatable; default: the --host address, or "
                        "every interface for 0.0.0.0/::); behind a proxy, this machine's LAN address")
    p.add_argument("--ice-peer-network", action="append", default=[], metavar="CIDR",
                   help="a network media may be exchanged with (repeatable; default: this host when "
                        "--host is loopback, else private networks); 0.0.0.0/0 and ::/0 allow any")
    p.add_argument("--debug-endpoints", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--echo-frame-ids", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--debug-step-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run_serve)
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    try:
        cluster = None if args.cluster is None else ClusterConfig.parse(
            args.cluster, wait_s=args.cluster_wait, gpus_per_session=args.cluster_gpus)
        return ServerConfig(
            host=args.host, port=args.port, max_sessions=args.max_sessions, crop_size_px=args.size,
            workers=args.workers, engine=args.engine, precision=args.precision, refiner=args.refiner,
            idle_timeout_s=args.idle_timeout, offer_timeout_s=args.offer_timeout,
            connect_timeout_s=args.connect_timeout, heartbeat_timeout_s=args.heartbeat_timeout,
            create_rate_per_min=args.create_rate, create_burst=args.create_burst,
            offer_rate_per_min=args.offer_rate, offer_burst=args.offer_burst,
            max_sessions_per_client=args.max_sessions_per_client, max_session_s=args.max_session_length,
            body_timeout_s=args.body_timeout, allowed_hosts=tuple(args.allow_host),
            trusted_proxies=tuple(args.trusted_proxy), ice_addresses=tuple(args.ice_address),
            ice_peer_networks=tuple(args.ice_peer_network),
            allowed_origins=tuple(args.allow_origin), debug_endpoints=args.debug_endpoints,
            echo_frame_ids=args.echo_frame_ids, debug_step_delay_ms=args.debug_step_delay_ms, cluster=cluster,
            landmarks_only=args.landmarks_only)
    except ValueError as e:
        raise EnlivenError(str(e)) from e


def run_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl+C. Returns the exit status."""
    from .app import (
        serve,  # aiortc, aiohttp and MediaPipe load for `serve` only: other subcommands start fast
    )
    from .vendor import landmarker_installed  # aiohttp, as .app

    config = config_from_args(args)
    if not landmarker_installed():
        if config.landmarks_only:
            print("enliven: error: --landmarks-only needs the in-browser face landmarker; install it with "
                  "`bash scripts/setup.sh` (or python scripts/vendor_web.py)", file=sys.stderr)
            return 2
        print("enliven: note: the in-browser face landmarker is not installed (bash scripts/setup.sh): pages will "
              "send camera video", file=sys.stderr)
    for name in ("enliven.server", "enliven.cluster"):  # sessions created and ended; with --cluster, placed
        logging.getLogger(name).setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def ready(url: str) -> None:
        print(f"enliven: serving on {url}  (open it in a browser; Ctrl+C to stop)", flush=True)
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print("enliven: note: browsers allow the webcam only on localhost or over https; put an https "
                  "proxy in front when serving other machines", flush=True)

    try:
        asyncio.run(serve(config, ready))
    except OSError as e:
        print(f"enliven: error: cannot listen on {config.host}:{config.port} ({e.strerror or e})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
