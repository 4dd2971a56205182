"""One error root (relay.errors.RelayError) that carries its exit status; the CLI catches it
alone. The table pins each user-facing class to the status README "Commands" documents."""

from __future__ import annotations

import inspect

import pytest

import relay.cli
import relay.config
import relay.keys
import relay.ocr
import relay.store
import relay.storeschema
from relay.cli import CannotRun, UsageError, error_line, main
from relay.config import ConfigError
from relay.errors import CANNOT_RUN, USAGE, RelayError
from relay.keys import KeyFileError
from relay.ocr import ImageTooLarge, OcrUnavailable, UnreadableImage
from relay.store import StoreError

STATUS = [
    (UsageError, 2),  # bad flag, missing input file, --report into a missing directory
    (ConfigError, 2),  # bad config value, members or auth file, cannot listen
    (CannotRun, 1),  # input over the size limit, image header refused
    (StoreError, 1),  # database missing, unreadable, of a newer schema
    (KeyFileError, 1),  # key file missing, malformed or exposed
    (OcrUnavailable, 1),  # tesseract or a language missing
    (UnreadableImage, 1),
    (ImageTooLarge, 1),
]


@pytest.mark.parametrize("cls, status", STATUS, ids=[c.__name__ for c, _ in STATUS])
def test_each_error_maps_to_its_exit_status(cls: type[RelayError], status: int) -> None:
    assert issubclass(cls, RelayError)
    assert cls.exit_status == status
    assert status in (USAGE, CANNOT_RUN)


def test_every_user_facing_error_class_is_in_the_table() -> None:
    """An Exception class defined in a module whose errors reach the user is a RelayError and
    is pinned above: a new one cannot slip past the CLI's one except clause."""
    found = {obj for mod in (relay.cli, relay.config, relay.keys, relay.ocr, relay.store,
                                                relay.storeschema)
             for obj in vars(mod).values()
             if inspect.isclass(obj) and issubclass(obj, Exception)
             and obj.__module__ == mod.__name__}
    assert found == {cls for cls, _ in STATUS}


@pytest.mark.parametrize("cls, status", STATUS, ids=[c.__name__ for c, _ in STATUS])
def test_main_prints_one_line_and_exits_with_the_status(
        cls: type[RelayError], status: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def raises(args: object) -> int:
        raise cls("/srv/relay/x: something is wrong")

    monkeypatch.setattr(relay.cli, "cmd_rotate", raises)
    assert main(["rotate-key"]) == status
    out, err = capsys.readouterr()
    assert out == "" and err == "relay: /srv/relay/x: something is wrong\n"


@pytest.mark.parametrize("message, line", [
    ("relay decode: standard input can be read only once",
     "relay decode: standard input can be read only once"),
    ("relay: --listen: bad port", "relay: --listen: bad port"),
    ("/etc/relay/config.toml: line 3: bad", "relay: /etc/relay/config.toml: line 3: bad"),
    ("relay.toml: line 3: bad", "relay: relay.toml: line 3: bad"),  # a file named relay*
    ("relay.db: database not found", "relay: relay.db: database not found"),
])
def test_error_line_prefixes_relay_unless_the_command_is_named(message: str, line: str) -> None:
    assert error_line(ConfigError(message)) == line
