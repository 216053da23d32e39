"""Which Iceberg catalog and table a run goes to, from the `catalog` / `table` inputs.

Three forms of the `catalog` input:
- empty: an embedded SQLite catalog and a local file warehouse under a directory (``.mlobs/``);
- ``uri=…,warehouse=…[,k=v…]``: pyiceberg catalog properties (``type=`` optional: pyiceberg
  infers it from the URI; ``name=`` sets the catalog name, default ``mlobs``);
- a bare name: a catalog defined in ``.pyiceberg.yaml`` / ``PYICEBERG_CATALOG__…`` env vars.

Property values may hold credentials, so ``repr`` and every message show them masked.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlobs.errors import ConfigError, SourceUnavailable, first_line
from mlobs.lake.schema import TABLE_DEFAULT
from mlobs.retry import Backoff

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

DEFAULT_CATALOG_NAME = "mlobs"
# Opening a fresh SQLite catalog creates its tables; processes opening it at the same moment race
# (SQLAlchemy checks, then creates): the losers' CREATE fails and a second look finds the tables.
_OPEN_RETRY = Backoff(base=0.05, cap=1.0, attempts=5)
_LOST_OPEN_RACE = ("already exists", "database is locked")

# One namespace level plus the table: the same identifier must work in pyiceberg, in Spark SQL
# (`catalog`.`ns`.`table`) and in file paths, so only plain identifier characters are allowed.
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\.[A-Za-z_][A-Za-z0-9_]{0,127}")
# Catalog names end up in Spark conf keys (spark.sql.catalog.<name>) and in the SQL catalog's rows.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
_SECRET_HINTS = ("password", "secret", "token", "credential", "key", "auth", "session")


def is_secret_key(key: str) -> bool:
    """Whether a property's value should never be shown (``s3.secret-access-key``, ``token``, …)."""
    lowered = key.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def redact_uri(text: str) -> str:
    """The text with any URI password (``scheme://user:pass@host``) replaced by ``***``."""
    return _USERINFO_PASSWORD.sub(r"\1:***@", text)


def redacted(properties: dict[str, str]) -> dict[str, str]:
    """Properties safe to print: secret-looking values masked, URI passwords masked."""
    shown: dict[str, str] = {}
    for key, value in properties.items():
        if is_secret_key(key):
            shown[key] = "***"
        elif key == "uri" or "://" in value:
            shown[key] = redact_uri(value)
        else:
            shown[key] = value
    return shown


def validate_table_identifier(table: str) -> tuple[str, str]:
    """``namespace.table`` → (namespace, table); anything else is a ConfigError naming it."""
    text = (table or "").strip()
    if not _TABLE_RE.fullmatch(text):
        raise ConfigError(
            f"invalid table {table!r}: expected namespace.table using letters, digits and "
            "underscores (e.g. mlobs.predictions)"
        )
    namespace, name = text.split(".")
    return namespace, name


@dataclass(frozen=True)
class CatalogConfig:
    """A pyiceberg catalog (name + properties; empty properties = look the name up) and a table."""

    name: str
    properties: dict[str, str] = field(default_factory=dict)
    table: str = TABLE_DEFAULT
    # The environment the CLI read: an s3:// warehouse's endpoint and region (see s3_defaults).
    env: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"invalid catalog name {self.name!r}: use letters, digits, '_' and '-'"
            )
        validate_table_identifier(self.table)

    def __repr__(self) -> str:  # never leak credentials into logs or tracebacks
        return (
            f"CatalogConfig(name={self.name!r}, properties={redacted(self.properties)!r}, "
            f"table={self.table!r})"
        )

    __str__ = __repr__

    @property
    def namespace(self) -> str:
        return validate_table_identifier(self.table)[0]

    @property
    def table_name(self) -> str:
        return validate_table_identifier(self.table)[1]

    @classmethod
    def parse(cls, text: str | None, table: str, default_dir: Path,
              env: Mapping[str, str] | None = None) -> CatalogConfig:
        """Read the `catalog` input; see the module docstring for the three forms. ``env``: the
        environment the CLI read (AWS_ENDPOINT_URL … for an s3:// warehouse)."""
        env = env or {}
        validate_table_identifier(table)
        text = (text or "").strip()
        if not text:
            base = Path(default_dir).resolve()
            return cls(
                name=DEFAULT_CATALOG_NAME,
                properties={
                    "type": "sql",
                    "uri": f"sqlite:///{base / 'catalog.db'}",
                    "warehouse": (base / "warehouse").as_uri(),
                },
                table=table.strip(),
                env=env,
            )
        if "=" not in text:
            return cls(name=text, properties={}, table=table.strip(), env=env)
        properties: dict[str, str] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not _KEY_RE.fullmatch(key):
                shown = "***" if is_secret_key(key) else item
                raise ConfigError(f"invalid catalog setting {shown!r}: expected key=value")
            if key in properties:
                raise ConfigError(f"catalog setting {key!r} given twice")
            properties[key] = value
        name = properties.pop("name", DEFAULT_CATALOG_NAME)
        if "uri" not in properties and "type" not in properties:
            raise ConfigError("catalog settings need uri=… (and usually warehouse=…)")
        return cls(name=name, properties=properties, table=table.strip(), env=env)

    def resolved_properties(self) -> dict[str, str]:
        """The properties pyiceberg will use: given ones, or the named catalog's configuration."""
        if self.properties:
            return dict(self.properties)
        from pyiceberg.utils.config import Config

        found = Config().get_catalog_config(self.name)
        if not found:
            raise ConfigError(
                f"catalog {self.name!r} is not defined in .pyiceberg.yaml or PYICEBERG_CATALOG__ "
                "environment variables"
            )
        return {str(k): str(v) for k, v in found.items()}

    def load(self) -> Catalog:
        """Open the pyiceberg catalog; local SQLite / file:// locations are created on demand."""
        from pyiceberg.catalog import load_catalog

        properties = s3_defaults(self.resolved_properties(), self.env)
        prepare_local(properties)
        local = sqlite_path(str(properties.get("uri", ""))) is not None

        def attempt() -> Catalog:
            try:
                # Always pass the properties: pyiceberg reads .pyiceberg.yaml once, at import time.
                return load_catalog(self.name, **properties)
            except (ValueError, NotImplementedError, ImportError) as exc:
                raise ConfigError(f"cannot open catalog {self.name!r}: {_first_line(exc)}") from exc
            except Exception as exc:  # connection refused, auth failure, SQL errors, …
                text = str(exc).lower()
                if local and any(s in text for s in _LOST_OPEN_RACE):
                    raise _LostOpenRace(exc) from exc
                raise SourceUnavailable(
                    f"cannot reach catalog {self.name!r}: {type(exc).__name__}: {_first_line(exc)}"
                ) from exc

        try:
            return _OPEN_RETRY.retrying(_LostOpenRace)(attempt)
        except _LostOpenRace as lost:
            exc = lost.error
            raise SourceUnavailable(
                f"cannot reach catalog {self.name!r}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc


class _LostOpenRace(Exception):
    """Another process created the SQLite catalog's tables at the same moment: look again."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def s3_defaults(properties: dict[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """An ``s3://`` warehouse reached the way every AWS client is: the endpoint from
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, R2, a local server) unless ``s3.endpoint``
    is given, and with an endpoint a region (``AWS_REGION``, else us-east-1), so pyiceberg never
    asks AWS where a bucket of another service lives. Credentials stay with the AWS SDK's chain
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) unless ``s3.access-key-id`` … are given."""
    warehouse = str(properties.get("warehouse", ""))
    if not warehouse.startswith(("s3://", "s3a://")):
        return properties
    found = dict(properties)
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint and "s3.endpoint" not in found:
        found["s3.endpoint"] = endpoint
    if found.get("s3.endpoint") and "s3.region" not in found and "client.region" not in found:
        found["s3.region"] = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1").strip()
    return found


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///…`` SQLAlchemy URI (None for other URIs / in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def file_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI or plain path (None for object stores)."""
    if uri.startswith("file://"):
        return Path(urlsplit(uri).path)
    if "://" not in uri and uri:
        return Path(uri)
    return None


def prepare_local(properties: dict[str, Any]) -> None:
    """Create local catalog / warehouse locations, and put a SQLite catalog in WAL mode.

    In SQLite's default rollback-journal mode a reader in one process (a report, the other
    engine's pooled JDBC connection) blocks a commit in another ("database is locked"). In WAL
    mode readers and the one writer do not block each other. The mode is stored in the database
    file, so setting it once serves every engine and process.
    """
    db = sqlite_path(str(properties.get("uri", "")))
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        _use_wal(db)
    warehouse = file_path(str(properties.get("warehouse", "")))
    if warehouse is not None:
        warehouse.mkdir(parents=True, exist_ok=True)


_WAL_DEADLINE_S = 30.0
_WAL_RETRY = Backoff(base=0.02, cap=0.2, deadline=_WAL_DEADLINE_S)


def _use_wal(db: Path) -> None:
    # Switching to WAL takes an exclusive lock; when processes open a fresh catalog at once, SQLite
    # answers "database is locked" at once rather than through the busy timeout. Whoever wins
    # switches it for everyone, so the others look again until they see "wal".
    def attempt() -> None:
        connection = sqlite3.connect(db, timeout=_WAL_DEADLINE_S)
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()

    try:
        _WAL_RETRY.retrying(_locked)(attempt)
    except sqlite3.Error as exc:
        raise SourceUnavailable(f"cannot open the SQLite catalog {db}: {exc}") from exc


def _locked(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _first_line(exc: BaseException) -> str:
    return redact_uri(first_line(exc))
