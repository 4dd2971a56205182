"""Configuration file: defaults, every key, relative paths, and one clear error per bad value."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from relay import config
from relay.config import PROFILES, Config, ConfigError, parse_hostport

FULL = """
[listen]
host = "0.0.0.0"
port = 2525
allow = ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"]
hostname = "relay.example.org"
domains = ["Example.COM.", "other.org"]
max_message_size = 2048
max_recipients = 500
timeout = 120
tls_cert = "certs/relay.crt"
tls_key = "/etc/relay/tls.key"
auth_file = "users.txt"
max_connections = 300
max_connections_per_client = 12

[upstream]
host = "mx.internal"
port = 25
concurrency = 3
timeout = 30.5
fanout_budget = 100

[policy]
lists = [" All-Staff@Example.COM ", "team@example.org"]
min_recipients = 0

[policy.members]
"All-Staff@Example.COM" = "members/all.txt"
"team@example.org" = "/srv/team.txt"

[store]
path = "db/relay.db"

[signature]
key_file = "keys/relay.key"
profile = "dense"

[decode]
threshold = 1e-9
ocr_languages = "eng"
"""


def write(folder: Path, text: str, name: str = "config.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_match_the_interface() -> None:
    c = Config()
    assert (c.listen_host, c.listen_port) == ("127.0.0.1", 10025)
    assert c.allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert (c.upstream_host, c.upstream_port) == ("127.0.0.1", 10026)
    assert c.lists == ("all-staff@example.com",)
    assert c.min_recipients == 20
    assert c.db_path == Path("var/relay.db")
    assert c.key_file == Path("var/relay.key")
    assert c.threshold == 1e-6
    assert c.ocr_languages == "eng+fra"
    assert c.profile == "standard"
    assert c.word_rate == PROFILES["standard"]
    assert 0 < c.word_rate < 0.5
    assert c.members == {}
    assert c.tls_cert is None and c.tls_key is None and c.auth_file is None


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, "# nothing set\n")
    c = config.load(p)
    d = Config()
    for name in ("listen_host", "listen_port", "allow", "upstream_host", "upstream_port", "lists",
                 "min_recipients", "threshold", "ocr_languages", "profile", "concurrency",
                 "max_message_size", "max_recipients", "session_timeout", "fanout_budget",
                 "max_connections", "max_connections_per_client"):
        assert getattr(c, name) == getattr(d, name), name
    assert c.source == str(p)


def test_every_key_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "relay"
    p = write(folder, FULL)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not follow the working directory
    c = config.load(p)
    base = folder.resolve()
    assert c.listen_host == "0.0.0.0"
    assert c.listen_port == 2525
    assert c.allow == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"),
                       ipaddress.ip_network("192.168.1.7/32"))
    assert c.hostname == "relay.example.org"
    assert c.domains == ("example.com", "other.org")
    assert c.max_message_size == 2048
    assert c.max_recipients == 500
    assert c.session_timeout == 120.0 and isinstance(c.session_timeout, float)
    assert c.tls_cert == base / "certs/relay.crt"
    assert c.tls_key == Path("/etc/relay/tls.key")
    assert c.auth_file == base / "users.txt"
    assert (c.max_connections, c.max_connections_per_client) == (300, 12)
    assert c.upstream_host == "mx.internal"
    assert c.upstream_port == 25
    assert c.concurrency == 3
    assert c.upstream_timeout == 30.5
    assert c.fanout_budget == 100.0
    assert c.lists == ("all-staff@example.com", "team@example.org")
    assert c.min_recipients == 0
    assert c.members == {"all-staff@example.com": base / "members/all.txt",
                         "team@example.org": Path("/srv/team.txt")}
    assert c.db_path == base / "db/relay.db"
    assert c.key_file == base / "keys/relay.key"
    assert c.profile == "dense" and c.word_rate == PROFILES["dense"]
    assert c.threshold == 1e-9
    assert c.ocr_languages == "eng"
    assert c.source == str(p)


def test_relative_paths_follow_the_file_given_relatively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf", '[store]\npath = "relay.db"\n[signature]\nkey_file = "../k/key"\n')
    monkeypatch.chdir(tmp_path)
    c = config.load(Path("conf/config.toml"))
    assert c.db_path == (tmp_path / "conf").resolve() / "relay.db"
    assert c.db_path.is_absolute()
    assert c.key_file == (tmp_path / "conf").resolve() / "../k/key"


def test_integer_threshold_and_timeouts_accepted(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, "[upstream]\ntimeout = 5\n[decode]\nthreshold = 0.001\n"))
    assert c.upstream_timeout == 5.0
    assert c.threshold == 0.001


def test_load_none_without_config_file_uses_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = config.load(None)
    assert c == Config()
    assert c.source == "built-in defaults"


def test_load_none_reads_local_config_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[listen]\nport = 2526\n[store]\npath = "data/r.db"\n')
    monkeypatch.chdir(tmp_path)
    c = config.load(None)
    assert c.listen_port == 2526
    assert c.db_path == tmp_path.resolve() / "data/r.db"
    assert "config.toml" in c.source


def test_load_none_reports_errors_of_local_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[listen]\nport = 99999\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        config.load(None)
    assert "config.toml" in str(e.value) and "listen.port" in str(e.value)


BAD = [
    ("[bogus]\nx = 1\n", "bogus"),
    ("stray = 1\n", "stray"),
    ("listen = 5\n", "listen"),
    ("[listen]\nbogus = 1\n", "listen.bogus"),
    ("[listen]\nmax_connections = 0\n", "listen.max_connections"),
    ("[listen]\nmax_connections_per_client = 'many'\n", "listen.max_connections_per_client"),
    ("[upstream]\nhots = 'x'\n", "upstream.hots"),
    ("[policy]\nlist = []\n", "policy.list"),
    ("[store]\ndb = 'x'\n", "store.db"),
    ("[signature]\nkey = 'x'\n", "signature.key"),
    ("[decode]\nthreshhold = 0.1\n", "decode.threshhold"),
    ("[listen]\nport = '25'\n", "listen.port"),
    ("[listen]\nport = true\n", "listen.port"),
    ("[listen]\nport = 25.0\n", "listen.port"),
    ("[listen]\nport = 70000\n", "listen.port"),
    ("[listen]\nport = -1\n", "listen.port"),
    ("[upstream]\nport = 65536\n", "upstream.port"),
    ("[listen]\nhost = 127\n", "listen.host"),
    ("[listen]\nallow = ['10.0.0.300/8']\n", "listen.allow"),
    ("[listen]\nallow = ['localhost']\n", "listen.allow"),
    ("[listen]\nallow = '127.0.0.1'\n", "listen.allow"),
    ("[listen]\nmax_message_size = 10\n", "listen.max_message_size"),
    ("[listen]\ntimeout = 1\n", "listen.timeout"),
    ("[listen]\ntls_cert = 'c.pem'\n", "listen.tls_cert"),
    ("[listen]\nauth_file = 'users'\n", "listen.auth_file"),
    ("[upstream]\nconcurrency = 0\n", "upstream.concurrency"),
    ("[upstream]\ntimeout = 'slow'\n", "upstream.timeout"),
    ("[policy]\nlists = ['nobody']\n", "policy.lists"),
    ("[policy]\nlists = 'a@b.c'\n", "policy.lists"),
    ("[policy]\nmin_recipients = -1\n", "policy.min_recipients"),
    ("[policy]\nmin_recipients = 2.5\n", "policy.min_recipients"),
    ("[policy.members]\n'a@b.c' = 5\n", "policy.members"),
    ("[store]\npath = 5\n", "store.path"),
    ("[store]\nurl = 'mysql://u:pw@h/db'\n", "store.url"),
    ("[store]\nurl = 5\n", "store.url"),
    ("[signature]\nkey_file = ['a']\n", "signature.key_file"),
    ("[signature]\nprofile = 'loud'\n", "signature.profile"),
    ("[signature]\nprofile = 1\n", "signature.profile"),
    ("[decode]\nthreshold = 0\n", "decode.threshold"),
    ("[decode]\nthreshold = 1\n", "decode.threshold"),
    ("[decode]\nthreshold = 1.5\n", "decode.threshold"),
    ("[decode]\nthreshold = -1e-6\n", "decode.threshold"),
    ("[decode]\nthreshold = nan\n", "decode.threshold"),
    ("[decode]\nthreshold = 'tiny'\n", "decode.threshold"),
    ("[decode]\nthreshold = true\n", "decode.threshold"),
    ("[decode]\nocr_languages = 3\n", "decode.ocr_languages"),
]


@pytest.mark.parametrize(("text", "key"), BAD)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    assert key in msg, msg
    assert "\n" not in msg


def test_unknown_key_in_delivery_section_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "[delivery]\nno_such_key = 1\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert "[delivery]" in str(e.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[listen\nport = 1\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value) and "TOML" in str(e.value)


def test_non_utf8_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_bytes(b'[decode]\nocr_languages = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "dir.toml"
    p.mkdir()  # reading a directory fails even as root, unlike chmod 000
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_from_dict_source_label() -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict({"listen": {"port": 1 << 20}}, "flags")
    assert str(e.value).startswith("flags: listen.port")


def test_with_overrides_ignores_none() -> None:
    c = Config().with_overrides(listen_port=2600, db_path=None, listen_host=None)
    assert c.listen_port == 2600
    assert c.db_path == Config().db_path and c.listen_host == "127.0.0.1"


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:25", ("127.0.0.1", 25)),
    ("[::1]:2525", ("::1", 2525)),
    ("mx.example.org:0", ("mx.example.org", 0)),
])
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value, "--listen") == expected


@pytest.mark.parametrize("value", ["localhost", ":25", "host:port", "host:65536", "h:-1"])
def test_parse_hostport_errors_name_the_flag(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_hostport(value, "--upstream")
    assert str(e.value).startswith("--upstream")


def test_store_keep_days_and_metrics_listen(tmp_path: Path) -> None:
    assert Config().keep_days == 730 and Config().metrics_listen is None
    f = tmp_path / "c.toml"
    f.write_text('[store]\nkeep_days = 0\n[metrics]\nlisten = "127.0.0.1:9464"\n')
    c = config.load(f)
    assert c.keep_days == 0 and c.metrics_listen == ("127.0.0.1", 9464)


@pytest.mark.parametrize("text,key", [
    ("[store]\nkeep_days = -1\n", "store.keep_days"),
    ("[store]\nkeep_days = '2y'\n", "store.keep_days"),
    ('[metrics]\nlisten = "9464"\n', "metrics.listen"),
    ('[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen"),
    ('[metrics]\nport = 9464\n', "metrics.port"),
])
def test_operations_keys_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(f)


def test_store_url_selects_postgresql_and_a_bad_one_is_not_echoed() -> None:
    from relay.config import ConfigError, from_dict

    cfg = from_dict({"store": {"url": "postgresql://relay@db.example.com/relay"}})
    assert cfg.store_url == "postgresql://relay@db.example.com/relay"
    assert from_dict({}).store_url is None  # the embedded SQLite log by default
    with pytest.raises(ConfigError) as e:
        from_dict({"store": {"url": "mysql://relay:hunter2@db/relay"}})
    assert "hunter2" not in str(e.value)
