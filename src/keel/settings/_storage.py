"""Where keel keeps its data: the database section and the cache (state store) section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr

from keel.settings._declare import env, split_csv

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_STATE_FILE",
    "CacheSettings",
    "DatabaseSettings",
    "normalize_database_url",
    "state_file_beside",
]

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

DEFAULT_DATABASE_URL = "sqlite:///./keel.sqlite3"
DEFAULT_STATE_FILE = "var/keel-state.sqlite3"

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Map the URL forms platforms hand out onto keel's async drivers.

    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``,
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``. Raises ``ValueError`` for
    any other scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like scheme://...")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError("DATABASE_URL scheme must be postgres, postgresql or sqlite")
    return f"{driver}://{rest}"


def state_file_beside(database_url: str) -> str:
    """Beside a SQLite database file (``<file>-state``); else ``DEFAULT_STATE_FILE``."""
    scheme, _, rest = database_url.partition("://")
    if not scheme.startswith("sqlite"):
        return DEFAULT_STATE_FILE
    path = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return DEFAULT_STATE_FILE
    return path + "-state"


def _with_sslmode(url: SecretStr, sslmode: str | None) -> SecretStr:
    """``url`` with ``sslmode`` added when it is PostgreSQL and names neither sslmode nor ssl."""
    raw = url.get_secret_value()
    parts = urlsplit(raw)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if sslmode is None or not parts.scheme.startswith("postgresql"):
        return url
    if any(key in {"sslmode", "ssl"} for key, _ in query):
        return url
    return SecretStr(urlunsplit(parts._replace(query=urlencode([*query, ("sslmode", sslmode)]))))


def _database_url(value: SecretStr) -> SecretStr:
    return SecretStr(normalize_database_url(value.get_secret_value()))


def _package_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for name in value:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"{name!r} is not an importable package name (like myapp.migrations)")
    return value


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value().strip():
        return None
    scheme = value.get_secret_value().partition("://")[0].lower()
    if scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("REDIS_URL scheme must be redis, rediss or unix")
    return value


_DEFAULT_URL = SecretStr(DEFAULT_DATABASE_URL)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """What ``keel.db`` needs. ``url`` carries ``sslmode`` once it is built (see below)."""

    url: Annotated[SecretStr, env("DATABASE_URL"), AfterValidator(_database_url)] = _DEFAULT_URL
    pool_size: Annotated[int, env("KEEL_DB_POOL_SIZE", ge=1, le=100)] = 5
    max_overflow: Annotated[int, env("KEEL_DB_MAX_OVERFLOW", ge=0, le=100)] = 5
    pool_timeout: Annotated[float, env("KEEL_DB_POOL_TIMEOUT", gt=0)] = 5.0
    connect_timeout: Annotated[float, env("KEEL_DB_CONNECT_TIMEOUT", gt=0)] = 5.0
    echo: Annotated[bool, env("KEEL_DB_ECHO")] = False
    #: Importable packages of application revisions, run with keel's.
    migration_packages: Annotated[
        tuple[str, ...],
        BeforeValidator(split_csv),
        env("KEEL_MIGRATIONS"),
        AfterValidator(_package_names),
    ] = ()
    #: Added to a PostgreSQL URL that names no sslmode (platforms hand out such URLs).
    sslmode: Annotated[SslMode | None, env("KEEL_DATABASE_SSLMODE")] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _with_sslmode(self.url, self.sslmode))

    @property
    def dialect(self) -> Literal["postgresql", "sqlite"]:
        return "sqlite" if self.url.get_secret_value().startswith("sqlite") else "postgresql"

    @property
    def host(self) -> str | None:
        return urlsplit(self.url.get_secret_value()).hostname

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url.get_secret_value()).query))

    def redacted_url(self) -> str:
        """The URL without its password, for messages."""
        parts = urlsplit(self.url.get_secret_value())
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = urlencode(
            [
                (k, "***" if any(w in k.lower() for w in ("pass", "secret", "key", "token")) else v)
                for k, v in parse_qsl(parts.query)
            ]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """What ``keel.cache`` needs; ``cluster``: ``redis_url`` names a node of a Redis Cluster.

    ``state_file`` is the SQLite file every process of this machine shares:
    the store itself without ``REDIS_URL``, Redis's fallback with it. Unset,
    ``Settings`` puts it beside a SQLite database.
    """

    redis_url: Annotated[SecretStr | None, env("REDIS_URL"), AfterValidator(_redis_url)] = None
    timeout: Annotated[float, env("KEEL_CACHE_TIMEOUT", gt=0)] = 0.25
    retry_interval: Annotated[float, env("KEEL_CACHE_RETRY_INTERVAL", gt=0)] = 1.0
    # No braces, ever: on a Redis Cluster a "{" in the prefix would make the
    # prefix every key's hash tag (the whole cache in one slot) or break the
    # tags keys carry ("user:{42}:...") for keys read together.
    namespace: Annotated[str, env("KEEL_CACHE_NAMESPACE", pattern=r"^[A-Za-z0-9._:-]{1,64}$")] = (
        "keel:"
    )
    state_file: Annotated[str, env("KEEL_STATE_FILE", min_length=1, max_length=4096)] = (
        DEFAULT_STATE_FILE
    )
    cluster: Annotated[bool, env("KEEL_REDIS_CLUSTER")] = False
    #: rediss:// only: False accepts any certificate (Heroku Redis's self-signed one).
    tls_verify: Annotated[bool, env("KEEL_REDIS_TLS_VERIFY")] = True
    degrade_after: Annotated[float, env("KEEL_CACHE_DEGRADE_AFTER", ge=0, le=60)] = 1.0
    #: Production on PostgreSQL without Redis is refused unless this says one instance.
    single_instance: Annotated[bool, env("KEEL_SINGLE_INSTANCE")] = False
