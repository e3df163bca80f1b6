"""Server settings: one frozen dataclass, a comment per field with its unit."""
from __future__ import annotations

from dataclasses import dataclass

from enliven.engine.choices import CROP_SIZES_PX, DEFAULT_CROP_SIZE_PX, DEFAULT_ENGINE, ENGINES, EngineName

MiB = 2**20
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
    offer_timeout_s: float = 30.0  # a created session must post its offer within this long
    connect_timeout_s: float = 20.0  # after the offer, the data channel must say hello within this long
    idle_timeout_s: float = 60.0  # a connected session with no webcam frame for this long is ended
    heartbeat_interval_s: float = 1.0  # the page pings this often over the data channel
    heartbeat_timeout_s: float = 5.0  # no data-channel message for this long = the client vanished
    max_upload_bytes: int = 10 * MiB  # photo upload body limit, checked before the body is read
    max_photo_pixels: int = 25_000_000  # photo width * height limit, checked from the header
    max_offer_bytes: int = 64 * 1024  # SDP offer request body limit
    max_sdp_media: int = 4  # m= lines accepted in an offer (video, audio, data channel)
    max_sdp_candidates: int = 32  # a=candidate lines accepted in an offer
    max_channel_message_bytes: int = 64 * 1024  # larger data-channel messages are refused
    max_channel_messages_per_s: float = 50.0  # data-channel messages beyond this rate are dropped
    create_rate_per_min: float = 10.0  # session creations per client address per minute (token bucket)
    create_burst: int = 5  # bucket size: creations allowed at once before the rate applies
    allowed_origins: tuple[str, ...] = ()  # extra page origins allowed besides the server's own
    stats_interval_s: float = 1.0  # how often the server sends stats over the data channel
    low_latency_jitter_buffer: bool = True  # release a webcam frame on its RTP marker bit (-1 frame latency)
    debug_endpoints: bool = False  # GET /debug/state (tests and benchmarks only)
    debug_step_delay_ms: float = 0.0  # extra time per frame in the workers: a slow generator (tests only)
    echo_frame_ids: bool = False  # copy the input's top 16 rows into the output (latency probes only)
    cluster: ClusterConfig | None = None  # sessions as Ray actors across machines (enliven.cluster); None: here

    def __post_init__(self) -> None:
        if self.crop_size_px not in CROP_SIZES_PX:
            raise ValueError(f"crop_size_px must be one of {CROP_SIZES_PX}; got {self.crop_size_px}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535; got {self.port}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {self.engine!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 (in-process threads) or more; got {self.workers}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1; got {self.max_sessions}")
        for name in ("offer_timeout_s", "connect_timeout_s", "idle_timeout_s", "heartbeat_interval_s",
                     "heartbeat_timeout_s", "create_rate_per_min", "stats_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be longer than heartbeat_interval_s")
