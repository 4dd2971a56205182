"""Configuration: the TOML file, its defaults, and one clear error per bad value.

Every user mistake raises ConfigError with a message naming the file and key; the CLI prints it
as one line and exits 2.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import USAGE, RelayError

PROFILES: dict[str, float] = {
    # share of ordinary word gaps a recipient's copy doubles (exactly, in every block of about
    # 48 word gaps: wordblocks.Blocks)
    "stealth": 0.0,  # sentence gaps only (the 2008 scheme)
    "standard": 1 / 6,  # default: one word gap in six, never more
    "dense": 0.3,
}


NUM = (int, float)


class ConfigError(RelayError):
    """A user-caused configuration problem; str() is the one line to show."""

    exit_status = USAGE


@dataclass(frozen=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 10025
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    hostname: str = "localhost"
    domains: tuple[str, ...] = ()  # recipient domains accepted; empty = any (from allowed clients)
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 10000
    session_timeout: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_file: Path | None = None
    max_connections: int = 200  # open SMTP sessions in all; more get 421 4.7.0
    max_connections_per_client: int = 50  # per IPv4 address / IPv6 /64

    upstream_host: str = "127.0.0.1"
    upstream_port: int = 10026
    concurrency: int = 8
    upstream_timeout: float = 60.0
    fanout_budget: float = 240.0  # seconds of fan-out before temp-failing the rest

    lists: tuple[str, ...] = ("all-staff@example.com",)
    min_recipients: int = 20
    members: dict[str, Path] = field(default_factory=dict)  # list address -> members file
    # what is analysed at all: bigger mail is delivered untouched (README, "Hostile input")
    max_message_bytes: int = 10 * 1024 * 1024
    max_text_bytes: int = 256 * 1024  # decoded size of one text/plain or text/html part
    analysis_timeout: float = 20.0  # seconds; a slower analysis leaves the message untouched

    db_path: Path = Path("var/relay.db")
    store_url: str | None = None  # [store] url: a shared PostgreSQL log instead of db_path
    keep_days: int = 730  # retention of the log; 0 = keep everything (relay.operator)
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen: Prometheus + health
    key_file: Path = Path("var/relay.key")
    profile: str = "standard"

    threshold: float = 1e-6
    ocr_languages: str = "eng+fra"

    source: str = "built-in defaults"

    @property
    def word_rate(self) -> float:
        return PROFILES[self.profile]

    def with_overrides(self, **kw: Any) -> Config:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ConfigError naming `what` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"{what}: port {p} out of range 0-65535")
    return host, p


class _Reader:
    def __init__(self, data: dict[str, Any], source: str, base: Path) -> None:
        self.data = data
        self.source = source
        self.base = base
        known = {"listen", "upstream", "policy", "store", "signature", "decode", "metrics"}
        for k in data:
            if k not in known:
                self.fail(k, f"unknown section (known: {', '.join(sorted(known))})")

    def fail(self, key: str, why: str) -> None:
        raise ConfigError(f"{self.source}: [{key}]: {why}" if "." not in key
                          else f"{self.source}: {key}: {why}")

    def section(self, name: str) -> dict[str, Any]:
        sec = self.data.get(name, {})
        if not isinstance(sec, dict):
            self.fail(name, "must be a table")
        return sec

    def get(self, sec: str, key: str, typ: type | tuple[type, ...], default: Any) -> Any:
        val = self.section(sec).get(key, default)
        if val is default:
            return default
        numeric = typ in (int, float, (int, float))
        ok = isinstance(val, typ) and not (isinstance(val, bool) and numeric)
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            self.fail(f"{sec}.{key}", f"expected {names}, got {val!r}")
        return val

    def path(self, sec: str, key: str, default: Path | None) -> Path | None:
        val = self.get(sec, key, str, None)
        if val is None:
            return default
        p = Path(val).expanduser()
        return p if p.is_absolute() else self.base / p

    def check_keys(self, sec: str, allowed: set[str]) -> None:
        for k in self.section(sec):
            if k not in allowed:
                self.fail(f"{sec}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _network(value: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a network (like 127.0.0.0/8)") from None


def _store_url(r: _Reader) -> str | None:
    url = r.get("store", "url", str, None)
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        r.fail("store.url", "expected a postgresql://user@host/database URL")
    return url


def load(path: Path | None) -> Config:
    """Read the config; `path=None` means ./config.toml when present, else built-in defaults."""
    if path is None:
        if not Path("config.toml").exists():
            return Config()
        path = Path("config.toml")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data, str(path), path.resolve().parent)


def from_dict(data: dict[str, Any], source: str = "config", base: Path | None = None) -> Config:
    r = _Reader(data, source, base or Path.cwd())
    d = Config()
    r.check_keys("listen", {"host", "port", "allow", "hostname", "domains", "max_message_size",
                            "max_recipients", "timeout", "tls_cert", "tls_key", "auth_file",
                            "max_connections", "max_connections_per_client"})
    r.check_keys("upstream", {"host", "port", "concurrency", "timeout", "fanout_budget"})
    r.check_keys("policy", {"lists", "min_recipients", "members", "max_message_bytes",
                            "max_text_bytes", "analysis_timeout"})
    r.check_keys("store", {"path", "url", "keep_days"})
    r.check_keys("metrics", {"listen"})
    r.check_keys("signature", {"key_file", "profile"})
    r.check_keys("decode", {"threshold", "ocr_languages"})

    def port(sec: str, default: int) -> int:
        p = r.get(sec, "port", int, default)
        if not 0 <= p <= 65535:
            r.fail(f"{sec}.port", f"{p} out of range 0-65535")
        return p

    def positive(sec: str, key: str, typ: Any, default: Any, minimum: Any = 1) -> Any:
        v = r.get(sec, key, typ, default)
        if v < minimum:
            r.fail(f"{sec}.{key}", f"must be at least {minimum}, got {v}")
        return v

    allow_raw = r.get("listen", "allow", list, None)
    allow = d.allow if allow_raw is None else tuple(
        _network(a, f"{source}: listen.allow") for a in allow_raw)
    domains = tuple(str(x).lower().rstrip(".") for x in r.get("listen", "domains", list, []))

    lists_raw = r.get("policy", "lists", list, None)
    lists = d.lists if lists_raw is None else tuple(str(x).strip().lower() for x in lists_raw)
    for a in lists:
        if "@" not in a:
            r.fail("policy.lists", f"{a!r} is not an e-mail address")
    members_raw = r.get("policy", "members", dict, {})
    members: dict[str, Path] = {}
    for addr, file in members_raw.items():
        if not isinstance(file, str):
            r.fail(f"policy.members.{addr}", "expected a file path")
        p = Path(file).expanduser()
        members[addr.strip().lower()] = p if p.is_absolute() else r.base / p

    metrics_raw = r.get("metrics", "listen", str, None)
    metrics_listen = (None if metrics_raw is None
                      else parse_hostport(metrics_raw, f"{source}: metrics.listen"))
    profile = r.get("signature", "profile", str, d.profile)
    if profile not in PROFILES:
        r.fail("signature.profile", f"{profile!r} is not one of {', '.join(PROFILES)}")
    threshold = float(r.get("decode", "threshold", (int, float), d.threshold))
    if not 0 < threshold < 1:
        r.fail("decode.threshold", f"must be between 0 and 1, got {threshold}")
    tls_cert = r.path("listen", "tls_cert", None)
    tls_key = r.path("listen", "tls_key", None)
    if (tls_cert is None) != (tls_key is None):
        r.fail("listen.tls_cert", "tls_cert and tls_key go together")
    auth_file = r.path("listen", "auth_file", None)
    if auth_file is not None and tls_cert is None:
        r.fail("listen.auth_file", "AUTH is offered only over TLS: set tls_cert and tls_key too")

    return Config(
        listen_host=r.get("listen", "host", str, d.listen_host),
        listen_port=port("listen", d.listen_port),
        allow=allow,
        hostname=r.get("listen", "hostname", str, d.hostname),
        domains=domains,
        max_message_size=positive("listen", "max_message_size", int, d.max_message_size, 1024),
        max_recipients=positive("listen", "max_recipients", int, d.max_recipients, 100),
        session_timeout=float(positive("listen", "timeout", (int, float), d.session_timeout, 10)),
        tls_cert=tls_cert,
        tls_key=tls_key,
        auth_file=auth_file,
        max_connections=positive("listen", "max_connections", int, d.max_connections, 1),
        max_connections_per_client=positive("listen", "max_connections_per_client", int,
                                            d.max_connections_per_client, 1),
        upstream_host=r.get("upstream", "host", str, d.upstream_host),
        upstream_port=port("upstream", d.upstream_port),
        concurrency=positive("upstream", "concurrency", int, d.concurrency, 1),
        upstream_timeout=float(positive("upstream", "timeout", NUM, d.upstream_timeout, 1)),
        fanout_budget=float(positive("upstream", "fanout_budget", NUM, d.fanout_budget, 1)),
        lists=lists,
        min_recipients=positive("policy", "min_recipients", int, d.min_recipients, 0),
        members=members,
        max_message_bytes=positive("policy", "max_message_bytes", int, d.max_message_bytes, 0),
        max_text_bytes=positive("policy", "max_text_bytes", int, d.max_text_bytes, 0),
        analysis_timeout=float(positive("policy", "analysis_timeout", NUM, d.analysis_timeout,
                                        1)),
        db_path=r.path("store", "path", d.db_path) or d.db_path,
        store_url=_store_url(r),
        keep_days=positive("store", "keep_days", int, d.keep_days, 0),
        metrics_listen=metrics_listen,
        key_file=r.path("signature", "key_file", d.key_file) or d.key_file,
        profile=profile,
        threshold=threshold,
        ocr_languages=r.get("decode", "ocr_languages", str, d.ocr_languages),
        source=source,
    )
