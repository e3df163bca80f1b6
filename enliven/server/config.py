"""Server settings: one frozen dataclass, a comment per field with its unit."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from enliven.engine.choices import (
    CROP_SIZES_PX,
    DEFAULT_CROP_SIZE_PX,
    DEFAULT_ENGINE,
    ENGINES,
    FACE_REFINERS,
    FAST_REFINER,
    EngineName,
)

MiB = 2**20
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")  # of the trained refiner's per-frame graph
CLUSTER_SCHEME = "ray"  # --cluster ray[:ADDRESS]: the only cluster engine so far


@dataclass(frozen=True)
class ClusterConfig:
    """``--cluster ray[:ADDRESS]``: every live session is a Ray actor on a node with a free session slot
    (enliven.cluster). Nodes declare their slots as the custom resource ``slot_resource``."""

    address: str | None = None  # ray.init's address ("auto", "HOST:PORT"); None: a private Ray on this machine
    #                             with max_sessions slots
    slot_resource: str = "enliven_session"  # custom resource a node declares, one unit per session it can run
    wait_s: float = 2.0  # how long a new session waits for a free slot before it gets 503 + Retry-After
    gpus_per_session: float = 0.0  # GPU share each session reserves: 0 = any node; > 0 = GPU nodes only
    start_timeout_s: float = 120.0  # a placed session's actor must start and prepare its photo within this long
    call_timeout_s: float = 15.0  # the longest the front door waits for a live actor's answer (offer, photo, end)

    def __post_init__(self) -> None:
        for name in ("wait_s", "start_timeout_s", "call_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"cluster {name} must be positive; got {getattr(self, name)}")
        if self.gpus_per_session < 0:
            raise ValueError(f"cluster gpus_per_session must be 0 or more; got {self.gpus_per_session}")

    @classmethod
    def parse(cls, spec: str, **options: float) -> ClusterConfig:
        """``ray`` (a private Ray on this machine) or ``ray:ADDRESS`` (``ray:auto``, ``ray:10.0.0.5:6379``)."""
        scheme, _, address = spec.partition(":")
        if scheme != CLUSTER_SCHEME or (_ and not address):
            raise ValueError(f"--cluster expects {CLUSTER_SCHEME} or {CLUSTER_SCHEME}:ADDRESS (e.g. ray:auto, "
                             f"ray:10.0.0.5:6379); got {spec!r}")
        return cls(address=address or None, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # interface to listen on; getUserMedia needs 127.0.0.1/localhost or https
    port: int = 8080  # TCP port of the page and the signalling API; 0 = any free port
    max_sessions: int = 4  # live sessions at once (created, connecting or streaming); more get 503
    workers: int | None = None  # inference worker processes; None = one per core (at most max_sessions); 0 = threads
    engine: EngineName = DEFAULT_ENGINE  # engine of new sessions, one of choices.ENGINES: "trained" (learned
    #                                      refiner) or "analytic" (warp only, faster)
    crop_size_px: int = DEFAULT_CROP_SIZE_PX  # default output size of the animated face, one of choices.CROP_SIZES_PX
    precision: Precision = "int8"  # of the trained refiner's per-frame graph: int8 takes about half the CPU of
    #                                fp32 for 0.04 dB face PSNR (benchmarks/QUALITY.md); more sessions per core
    refiner: str = FAST_REFINER  # the trained engine's face refiner: its distilled student (refiner128s: ~40 %
    #                                less decoder time for 0.06 dB face PSNR on val) or "refiner128"
    offer_timeout_s: float = 30.0  # a created session must post its offer within this long
    connect_timeout_s: float = 20.0  # after the offer, the data channel must say hello within this long
    idle_timeout_s: float = 60.0  # a connected session with no webcam frame for this long is ended
    heartbeat_interval_s: float = 1.0  # the page pings this often over the data channel
    heartbeat_timeout_s: float = 5.0  # no data-channel message for this long = the client vanished
    max_session_s: float = 1800.0  # a session is ended this long after it was created, whatever it does
    body_timeout_s: float = 20.0  # a request's body (photo upload, offer) must have arrived within this long
    max_upload_bytes: int = 10 * MiB  # photo upload body limit, checked before the body is read
    max_photo_pixels: int = 25_000_000  # photo width * height limit, checked from the header
    decode_memory_bytes: int = 1024 * MiB  # address space a photo's decoding child may add (RLIMIT_AS)
    decode_cpu_s: int = 3  # CPU seconds a photo's decoding child may use (RLIMIT_CPU); wall limit 5x this
    max_concurrent_decodes: int = 2  # photo decoding children at once; more uploads wait for a turn
    max_webcam_pixels: int = 1920 * 1080  # larger webcam frames are dropped before decoding (VP8 key frame size)
    max_offer_bytes: int = 64 * 1024  # SDP offer request body limit
    max_offer_video: int = 1  # video media sections accepted in an offer (the webcam)
    max_offer_audio: int = 1  # audio media sections accepted in an offer (the microphone)
    max_sdp_candidates: int = 32  # a=candidate lines accepted in an offer
    ice_addresses: tuple[str, ...] = ()  # local addresses announced in answers; () = the listening address
    #                                      when it is a specific one (127.0.0.1 on loopback), every interface
    #                                      when it is 0.0.0.0 or ::
    ice_peer_networks: tuple[str, ...] = ()  # networks (CIDR) ICE may send to; () = this host's own addresses
    #                                          when listening on loopback, else private and link-local networks
    max_channel_message_bytes: int = 64 * 1024  # data-channel message limit: announced in the answer's SDP,
    #                                             enforced while SCTP reassembles (the session is ended)
    max_channel_messages_per_s: float = 50.0  # data-channel messages beyond this rate are dropped
    create_rate_per_min: float = 10.0  # session creations per client address per minute (token bucket)
    create_burst: int = 5  # bucket size: creations allowed at once before the rate applies
    offer_rate_per_min: float = 12.0  # offers per client address per minute (token bucket)
    offer_burst: int = 3  # bucket size of the offers
    max_sessions_per_client: int = 2  # live sessions of one client address; more get 429
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks (CIDR) whose X-Forwarded-For names the client
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides localhost names and IP addresses
    #                                      (DNS rebinding guard): e.g. the name an https proxy forwards
    allowed_origins: tuple[str, ...] = ()  # extra page origins allowed besides the server's own
    stats_interval_s: float = 1.0  # how often the server sends stats over the data channel
    low_latency_jitter_buffer: bool = True  # release a webcam frame on its RTP marker bit (-1 frame latency)
    debug_endpoints: bool = False  # GET /debug/state (tests and benchmarks only)
    debug_step_delay_ms: float = 0.0  # extra time per frame in the workers: a slow generator (tests only)
    echo_frame_ids: bool = False  # copy the input's top 16 rows into the output (latency probes only)
    landmarks_only: bool = False  # refuse offers that send camera video: pages must send face points (upstream.py)
    max_points_per_s: float = 60.0  # face-points messages beyond this rate per session are dropped
    cluster: ClusterConfig | None = None  # sessions as Ray actors across machines (enliven.cluster); None: here

    def __post_init__(self) -> None:
        if self.crop_size_px not in CROP_SIZES_PX:
            raise ValueError(f"crop_size_px must be one of {CROP_SIZES_PX}; got {self.crop_size_px}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535; got {self.port}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.refiner not in FACE_REFINERS:
            raise ValueError(f"refiner must be one of {FACE_REFINERS}; got {self.refiner!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 (in-process threads) or more; got {self.workers}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1; got {self.max_sessions}")
        for name in ("offer_timeout_s", "connect_timeout_s", "idle_timeout_s", "heartbeat_interval_s",
                     "heartbeat_timeout_s", "create_rate_per_min", "offer_rate_per_min", "stats_interval_s",
                     "max_session_s", "body_timeout_s", "decode_cpu_s", "max_concurrent_decodes",
                     "max_sessions_per_client", "max_webcam_pixels", "max_points_per_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.max_offer_video < 0 or self.max_offer_audio < 0:
            raise ValueError("max_offer_video and max_offer_audio must be 0 or more")
        for name in ("trusted_proxies", "ice_peer_networks"):
            for net in getattr(self, name):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError as e:
                    raise ValueError(f"{name}: expected an address or network (CIDR); got {net!r}") from e
        for address in self.ice_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError as e:
                raise ValueError(f"ice_addresses: expected an IP address; got {address!r}") from e
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be longer than heartbeat_interval_s")
