"""Configuration file: defaults, every key, relative paths, and one clear error per bad value."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import fields
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
    assert (c.listen.host, c.listen.port) == ("127.0.0.1", 10025)
    assert c.listen.allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert (c.upstream.host, c.upstream.port) == ("127.0.0.1", 10026)
    assert c.policy.lists == ("all-staff@example.com",)
    assert c.policy.min_recipients == 20
    assert c.store.path == Path("var/relay.db")
    assert c.signature.key_file == Path("var/relay.key")
    assert c.decode.threshold == 1e-6
    assert c.decode.ocr_languages == "eng+fra"
    assert c.signature.profile == "standard"
    assert c.signature.word_rate == PROFILES["standard"]
    assert 0 < c.signature.word_rate < 0.5
    assert c.policy.members == {}
    assert c.listen.tls_cert is None and c.listen.tls_key is None and c.listen.auth_file is None


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, "# nothing set\n")
    c = config.load(p)
    d = Config()
    for name in ("listen.host", "listen.port", "listen.allow", "upstream.host", "upstream.port",
                 "policy.lists", "policy.min_recipients", "decode.threshold",
                 "decode.ocr_languages", "signature.profile", "upstream.concurrency",
                 "listen.max_message_size", "listen.max_recipients", "listen.timeout",
                 "upstream.fanout_budget", "listen.max_connections",
                 "listen.max_connections_per_client"):
        section, key = name.split(".")
        assert getattr(getattr(c, section), key) == getattr(getattr(d, section), key), name
    assert c.source == str(p)


def test_every_key_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "relay"
    p = write(folder, FULL)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not follow the working directory
    c = config.load(p)
    base = folder.resolve()
    assert c.listen.host == "0.0.0.0"
    assert c.listen.port == 2525
    assert c.listen.allow == (ipaddress.ip_network("10.0.0.0/8"),
                              ipaddress.ip_network("2001:db8::/32"),
                              ipaddress.ip_network("192.168.1.7/32"))
    assert c.listen.hostname == "relay.example.org"
    assert c.listen.domains == ("example.com", "other.org")
    assert c.listen.max_message_size == 2048
    assert c.listen.max_recipients == 500
    assert c.listen.timeout == 120.0 and isinstance(c.listen.timeout, float)
    assert c.listen.tls_cert == base / "certs/relay.crt"
    assert c.listen.tls_key == Path("/etc/relay/tls.key")
    assert c.listen.auth_file == base / "users.txt"
    assert (c.listen.max_connections, c.listen.max_connections_per_client) == (300, 12)
    assert c.upstream.host == "mx.internal"
    assert c.upstream.port == 25
    assert c.upstream.concurrency == 3
    assert c.upstream.timeout == 30.5
    assert c.upstream.fanout_budget == 100.0
    assert c.policy.lists == ("all-staff@example.com", "team@example.org")
    assert c.policy.min_recipients == 0
    assert c.policy.members == {"all-staff@example.com": base / "members/all.txt",
                                "team@example.org": Path("/srv/team.txt")}
    assert c.store.path == base / "db/relay.db"
    assert c.signature.key_file == base / "keys/relay.key"
    assert c.signature.profile == "dense" and c.signature.word_rate == PROFILES["dense"]
    assert c.decode.threshold == 1e-9
    assert c.decode.ocr_languages == "eng"
    assert c.source == str(p)


def test_relative_paths_follow_the_file_given_relatively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf", '[store]\npath = "relay.db"\n[signature]\nkey_file = "../k/key"\n')
    monkeypatch.chdir(tmp_path)
    c = config.load(Path("conf/config.toml"))
    assert c.store.path == (tmp_path / "conf").resolve() / "relay.db"
    assert c.store.path.is_absolute()
    assert c.signature.key_file == (tmp_path / "conf").resolve() / "../k/key"


def test_integer_threshold_and_timeouts_accepted(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, "[upstream]\ntimeout = 5\n[decode]\nthreshold = 0.001\n"))
    assert c.upstream.timeout == 5.0
    assert c.decode.threshold == 0.001


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
    assert c.listen.port == 2526
    assert c.store.path == tmp_path.resolve() / "data/r.db"
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
    ("[store]\nurl = 5\n", "store.url"),
    ("[store]\nurl = 'sqlite:///x.db'\n", "store.url"),
    ("[store]\nurl = 'postgres://h/db'\npath = 'x.db'\n", "store.url"),
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


def test_with_keys_changes_only_the_keys_given() -> None:
    c = Config().with_keys(listen=dict(port=2600), store=dict(keep_days=0))
    assert c.listen.port == 2600 and c.store.keep_days == 0
    assert c.listen.host == "127.0.0.1" and c.store.path == Config().store.path
    assert (c.upstream, c.policy, c.source) == (Config().upstream, Config().policy,
                                                Config().source)
    with pytest.raises(TypeError):
        Config().with_keys(listen=dict(listen_port=2600))  # the old flat name is no key


def test_sections_mirror_the_file(tmp_path: Path) -> None:
    """Every key of the full example is a field of its section, under the same name; and every
    field of a section is a key the file may set."""
    data = tomllib.loads(FULL)
    c = config.load(write(tmp_path, FULL))
    assert set(config.SECTIONS) == {f.name for f in fields(Config)} - {"source"}
    for section, table in data.items():
        for key in table:
            assert key in {f.name for f in fields(getattr(c, section))}, f"{section}.{key}"
    for section, cls in config.SECTIONS.items():
        for f in fields(cls):
            with pytest.raises(ConfigError, match=rf"{section}\.{f.name}: "):
                config.from_dict({section: {f.name: object()}}, "x")


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
    assert Config().store.keep_days == 730 and Config().metrics.listen is None
    f = tmp_path / "c.toml"
    f.write_text('[store]\nkeep_days = 0\n[metrics]\nlisten = "127.0.0.1:9464"\n')
    c = config.load(f)
    assert c.store.keep_days == 0 and c.metrics.listen == ("127.0.0.1", 9464)


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


def test_store_url_selects_postgresql(tmp_path: Path) -> None:
    assert Config().store.url is None
    for url in ("postgresql://relay@db.internal/relay", "postgres://relay:pw@127.0.0.1:5432/r"):
        c = config.load(write(tmp_path, f'[store]\nurl = "{url}"\nkeep_days = 90\n'))
        assert c.store.url == url and c.store.keep_days == 90
        assert c.store.path == Config().store.path  # not read; no SQLite file is named


@pytest.mark.parametrize("text", [
    '[store]\nurl = "mysql://relay:s3cret@db/relay"\n',
    '[store]\nurl = "postgresql:relay:s3cret@db"\n',
    '[store]\nurl = ""\n',
])
def test_store_url_must_be_postgresql(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(e.value) == f"{p}: store.url: expected a postgresql:// URL"
    assert "s3cret" not in str(e.value)  # a URL may hold a password: never echoed


def test_store_url_and_path_together_refused(tmp_path: Path) -> None:
    p = write(tmp_path, '[store]\nurl = "postgresql://db/relay"\npath = "relay.db"\n')
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: store.url: ") and "path" in msg and "\n" not in msg
