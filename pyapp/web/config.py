"""Settings of the HTTP API, fixed when the app is created."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_EVENTS = 500  # ODP's limit per request
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # 500 events of the largest valid size fit with room to spare
# A snapshot upload (POST /v3/audiences/{id}/snapshot) is a whole audience: about 50 bytes a member as CSV.
DEFAULT_MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
# The longest one statement of an API read may run (GraphQL, member listings, the change feed, segment reads):
# a read past it is cancelled by PostgreSQL (57014) and answered with its own error (pyapp/errors.py).
DEFAULT_READ_STATEMENT_TIMEOUT = 2.0
# Snapshot uploads one process handles at once: each holds a spool file, a thread and a database connection, and
# decompressing and parsing keeps a CPU busy; two keep imports going while leaving room for the events.
DEFAULT_MAX_SNAPSHOT_UPLOADS = 2


@dataclass(frozen=True)
class ApiConfig:
    max_events: int = DEFAULT_MAX_EVENTS
    # The most bytes a request body may have, as sent and again after gzip decompression.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The same for a snapshot upload, which is spooled to a temporary file, never held in memory.
    max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES
    # How many snapshot uploads one server process handles at once; one more is 503 before its body is read.
    max_snapshot_uploads: int = DEFAULT_MAX_SNAPSHOT_UPLOADS
    # The worker's pooled connections in all, split into two budgets (pyapp/web/database.py): reads
    # (read_pool_share of them) and writes (the rest), so that slow reads cannot take the connections
    # events wait for. Each budget has at least one connection: a total below 2 still opens two.
    pool_min_size: int = 1
    pool_max_size: int = 10
    read_pool_share: float = 0.5
    # Seconds; 0: none. Writes (events, snapshots, segment changes) have no statement timeout of their own.
    read_statement_timeout: float = DEFAULT_READ_STATEMENT_TIMEOUT
    # A streaming replica of the database (docs/operations.md, "Read replicas"): GraphQL, segment listings and
    # member pages read there; None: everything on the primary.
    read_database_url: str | None = None
    # How long a request waits for a database connection before it is answered 503.
    pool_timeout: float = 5.0
    application_name: str = "passthrough-http"
    # Background upkeep (pyapp/workers/upkeep.py): the expiry sweeper and retention pruning, in seconds.
    expire_every: float = 5.0
    prune_every: float = 3600.0
    # Webhook delivery (pyapp/workers/webhooks.py): how often due webhooks are checked without a NOTIFY, in seconds,
    # and how long one POST may take.
    webhook_every: float = 1.0
    webhook_timeout: float = 10.0
    # How often a worker that does not run the background jobs (expiry, retention, webhooks) tries to take
    # them over, and how often the one that does checks its hold on them (pyapp/web/leader.py).
    leadership_retry: float = 5.0
    # GraphQL: the SDKs' customer query answered through its compiled plan (pyapp/web/graphql/plan.py); off,
    # graphql-core's executor answers every query (the answers are the same, byte for byte)
    graphql_compiled: bool = True
    # CORS (pyapp/web/cors.py): the origins whose pages may call the public-key routes ("*": any), and the
    # routes that need a private key (none by default).
    cors_origins: tuple[str, ...] = ("*",)
    cors_private_origins: tuple[str, ...] = ()
    # GET /metrics needs a private key (passthrough serve --metrics-auth: by default only when it listens
    # beyond loopback); False: anyone who reaches the port may read it
    metrics_key_required: bool = True

    def __post_init__(self) -> None:
        for name in ("max_events", "max_body_bytes", "max_snapshot_bytes", "max_snapshot_uploads", "pool_max_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("pool_min_size must be between 0 and pool_max_size")
        if self.expire_every <= 0 or self.prune_every <= 0:
            raise ValueError("expire_every and prune_every must be positive")
        if self.leadership_retry <= 0:
            raise ValueError("leadership_retry must be positive")
        if self.webhook_every <= 0 or self.webhook_timeout <= 0:
            raise ValueError("webhook_every and webhook_timeout must be positive")
        if self.pool_timeout <= 0:
            raise ValueError("pool_timeout must be positive")
        if not 0 < self.read_pool_share < 1:
            raise ValueError(f"read_pool_share must be between 0 and 1 (exclusive), got {self.read_pool_share}")
        if not 0 <= self.read_statement_timeout < 86400:
            raise ValueError(f"read_statement_timeout must be from 0 (none) to 86400 seconds, "
                             f"got {self.read_statement_timeout}")
        for origin in (*self.cors_origins, *self.cors_private_origins):
            if (origin != "*" and not origin.startswith(("http://", "https://"))) or origin.endswith("/"):
                raise ValueError(f"a CORS origin is * or scheme://host[:port] with no path, got {origin!r}")

    @property
    def read_pool_max_size(self) -> int:
        """The read budget: read_pool_share of pool_max_size, at least 1, leaving at least 1 to writes."""
        return max(1, min(self.pool_max_size - 1, round(self.pool_max_size * self.read_pool_share)))

    @property
    def write_pool_max_size(self) -> int:
        """The write budget: the rest of pool_max_size, at least 1."""
        return max(1, self.pool_max_size - self.read_pool_max_size)
