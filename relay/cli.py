"""Command line: `relay serve`, `relay decode`, `relay rotate-key`; the operator commands
`relay messages`, `relay purge` (relay.operator), `relay check` (relay.checks), `relay migrate`
(relay.storemigrate).

User-caused problems are relay.errors.RelayError: main() prints its one line on stderr and exits
with its exit_status, 2 (usage, config, missing input) or 1 (cannot run: database unreadable, OCR
engine missing). Never a traceback for those.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, config, keys
from .config import Config, parse_hostport
from .errors import CANNOT_RUN, USAGE, RelayError
from .printable import escape, escape_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}
MAX_TEXT_BYTES = 1 << 20  # suspect text: 1 MiB is about 150,000 words, a whole book
MAX_IMAGE_BYTES = 50 << 20  # a screenshot file (the pixel count is checked from its header)


class UsageError(RelayError):
    """Bad arguments or a missing input file: the user must change the command."""

    exit_status = USAGE


class CannotRun(RelayError):
    """The command is right but cannot run here (input too large, unreadable image)."""

    exit_status = CANNOT_RUN


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="relay", description="Leak-tracing SMTP relay.")
    p.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the SMTP relay in the foreground")
    s.add_argument("--config", type=Path, help="config file (default ./config.toml if present)")
    s.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    s.add_argument("--upstream", metavar="HOST:PORT", help="MTA reinjection address")
    s.add_argument("--db", type=Path, help="SQLite database path")

    d = sub.add_parser("decode", help="name the recipient whose copy suspect text came from")
    d.add_argument("--config", type=Path)
    d.add_argument("--db", type=Path)
    d.add_argument("--json", action="store_true", help="one JSON object on stdout")
    d.add_argument("--image", action="store_true", help="the input is a screenshot")
    d.add_argument("--report", type=Path, metavar="FILE.html",
                   help="also write the evidence sheet: one self-contained HTML file")
    d.add_argument("files", nargs="*", metavar="FILE", help="suspect text or image; - for stdin")

    r = sub.add_parser("rotate-key", help="append a new signing key (old keys still decode)")
    r.add_argument("--config", type=Path)
    _operator_parsers(sub)
    return p


def _operator_parsers(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("messages", help="the logged all-staff messages, newest first")
    m.add_argument("--config", type=Path)
    m.add_argument("--since", metavar="DATE", help="only messages logged since DATE "
                   "(YYYY-MM-DD or ISO 8601 date-time, UTC unless a zone is given)")
    m.add_argument("--json", action="store_true", help="one JSON array on stdout")
    g = sub.add_parser("purge", help="delete log entries older than DATE (no longer decodable)")
    g.add_argument("--config", type=Path)
    g.add_argument("--before", metavar="DATE", required=True)
    c = sub.add_parser("check", help="check config, key, database, ports and upstream")
    c.add_argument("--config", type=Path)
    c.add_argument("--no-upstream", action="store_true",
                   help="skip the upstream EHLO probe (systemd ExecStartPre before the MTA)")
    c.add_argument("--json", action="store_true", help="the findings as one JSON array")
    t = sub.add_parser("migrate", help="copy the SQLite log into a PostgreSQL database")
    t.add_argument("--config", type=Path)
    t.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/database")


def _load(args: argparse.Namespace) -> Config:
    """The config file with the command's flags over it: --listen sets [listen] host and port,
    --upstream [upstream] host and port, --db [store] path (SQLite: it also unsets url)."""
    cfg = config.load(args.config)
    flags: dict[str, dict[str, object]] = {}
    for flag in ("listen", "upstream"):
        if getattr(args, flag, None):
            host, port = parse_hostport(getattr(args, flag), f"--{flag}")
            flags[flag] = {"host": host, "port": port}
    if getattr(args, "db", None):
        flags["store"] = {"path": args.db, "url": None}
    return cfg.with_keys(**flags)


def _read_input(name: str, binary: bool) -> bytes:
    limit = MAX_IMAGE_BYTES if binary else MAX_TEXT_BYTES
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a directory") from None
    except OSError as e:
        raise UsageError(f"{name}: cannot read: {e.strerror}") from None
    if len(data) > limit:
        what = "an image" if binary else "suspect text"
        raise CannotRun(f"{name}: more than {limit >> 20} MiB, too large for {what}")
    if binary:
        from .ocr import UnreadableImage, check_image, is_image

        try:
            if is_image(data):
                check_image(data)  # the header only: a bomb is refused before it is decoded
        except UnreadableImage as e:
            raise CannotRun(f"{name}: {e}") from None
    return data


def _excerpt(name: str, data: bytes, image: bool, ocr_languages: str,
             sources: list | None = None) -> list:
    """The excerpt's words; with `sources`, also appends what the evidence sheet shows of it."""
    from .tokens import excerpt_words

    if image:
        from .ocr import OcrUnavailable, read_image, run_tesseract
        from .ocrgaps import classify_gaps

        try:
            if sources is None:
                return read_image(data, ocr_languages)
            words = run_tesseract(data, ocr_languages)  # read_image, keeping the boxes
        except OcrUnavailable as e:
            raise CannotRun(f"{name}: {e}" if name != "-" else str(e)) from None
        from .sheetinputs import image_source

        sources.append(image_source(name, data, words))
        return classify_gaps(words)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if sources is not None:
        from .sheetinputs import text_source

        sources.append(text_source(name, data, text))
    return excerpt_words(text)


def _write_sheet(path: Path, page: str) -> None:
    """Mode 0600 when created: the sheet names recipients."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UsageError(f"relay decode: --report {path}: cannot write: {e.strerror}") from None


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def render_report(rep: dict) -> str:
    """The human-readable verdict. Every string that came from mail (subject, date,
    Message-ID, recipients) is printed through printable.escape: no control character or bidi
    override reaches the terminal."""
    rep = _escaped(rep)
    lines = []
    verdict = rep["verdict"]
    if verdict == "no_match":
        lines.append("Verdict: NO MATCH. The text does not come from any logged fingerprinted "
                     "message.")
    else:
        m = rep["message"]
        top = rep["candidates"][0] if rep["candidates"] else None
        if verdict == "identified" and top:
            lines.append(f"Verdict: IDENTIFIED. The text comes from the copy sent to "
                         f"{top['recipient']}.")
        else:
            lines.append("Verdict: INCONCLUSIVE. The message was found, but the evidence does "
                         "not single out one recipient.")
        lines.append(f"Message: {m['subject'] or '(no subject)'}  |  {m['date'] or '(no date)'}"
                     f"  |  {m['message_id'] or '(no Message-ID)'}")
        lines.append(f"Recipients scored: {rep['recipients_scored']}; threshold "
                     f"{_fmt_p(rep['threshold'])}.")
        for i, ex in enumerate(rep["excerpts"], 1):
            label = f"Excerpt {i}: " if len(rep["excerpts"]) > 1 else "Excerpt: "
            lines.append(f"{label}{ex['words']} words, {ex['words_aligned']} aligned, "
                         f"{ex['bits_observed']} signature gaps read.")
        for o in rep["other_messages"]:
            lines.append(f"Also matches: {o['subject'] or '(no subject)'} | {o['date']} | "
                         f"{o['message_id']}")
        for pv in rep.get("provenance", []):
            m2, m1 = pv["message"], pv["contains"]
            who = pv["from_copy_of"] or "an unknown recipient"
            lines.append(f"Travelled: {m2['subject'] or '(no subject)'} ({m2['date'] or 'no date'}"
                         f", sent by {pv['sender']}) carries the text of "
                         f"{m1['subject'] or '(no subject)'}, made from the copy of {who}.")
            if pv.get("explains_top_candidate"):
                lines.append(f"  {who} sent this text on to all staff, so a match with their "
                             "copy does not show that they leaked it.")
        if top:
            lines.append(f"Chance that some innocent recipient matches this well: "
                         f"{_fmt_p(top['false_match_probability'])}")
            lines.append("")
            w = max(9, *(len(c["recipient"]) for c in rep["candidates"]))
            lines.append(f"  #  {'recipient':<{w}}  matching/observed  false-match probability")
            for i, c in enumerate(rep["candidates"], 1):
                lines.append(f"{i:>3}  {c['recipient']:<{w}}  "
                             f"{c['bits_matching']:>8}/{c['bits_observed']:<8}  "
                             f"{_fmt_p(c['false_match_probability'])}")
    return "\n".join(lines) + "\n"


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def cmd_decode(args: argparse.Namespace) -> int:
    from .decoding import decode
    from .store import open_store

    cfg = _load(args)
    decoded_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if args.report is not None and not args.report.parent.resolve().is_dir():
        raise UsageError(f"relay decode: --report {args.report}: no such directory")
    names = args.files or ["-"]
    if names.count("-") > 1:
        raise UsageError("relay decode: standard input can be read only once")
    inputs = []
    for name in names:
        image = args.image or Path(name).suffix.lower() in IMAGE_SUFFIXES
        inputs.append((name, _read_input(name, image), image))
    store = open_store(cfg.store.path, cfg.store.url, create=False)  # StoreError etc.: exit 1
    keyring = keys.load(cfg.signature.key_file)
    sources: list | None = [] if args.report is not None else None
    langs = cfg.decode.ocr_languages
    excerpts = [_excerpt(n, data, img, langs, sources) for n, data, img in inputs]
    result = decode(excerpts, store, keyring, cfg.decode.threshold)
    rep = result.as_json()
    if args.report is not None and sources is not None:
        from .evidence import render
        from .sheetinputs import Custody

        _write_sheet(args.report, render(result, sources, Custody(
            __version__, store.name if cfg.store.url else str(Path(cfg.store.path).resolve()),
            decoded_at)))
    if args.json:
        print(escape_json(json.dumps(rep, ensure_ascii=False)))
    else:
        sys.stdout.write(render_report(rep))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(_load(args))


def cmd_rotate(args: argparse.Namespace) -> int:
    key_file = _load(args).signature.key_file
    kid = keys.rotate(key_file)
    print(f"new signing key {kid} appended to {key_file}; older keys still decode")
    return 0


def _date(value: str, flag: str, command: str) -> float:
    from .operator import parse_date

    ts = parse_date(value)
    if ts is None:
        raise UsageError(f"relay {command}: {flag}: {value!r} is not a date "
                         "(YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC unless a zone is given)")
    return ts


def cmd_messages(args: argparse.Namespace) -> int:
    from . import operator

    since = _date(args.since, "--since", "messages") if args.since else None
    cfg = _load(args)
    rows = operator.list_messages(cfg.store.path, since, cfg.store.url)
    if args.json:
        print(json.dumps(operator.messages_json(rows), ensure_ascii=False))
    else:
        sys.stdout.write(operator.render_messages(rows))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from . import operator

    before = _date(args.before, "--before", "purge")
    sys.stdout.write(operator.render_purged(operator.purge_cli(_load(args).store, before), before))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from . import checks

    findings = checks.check(_load(args), upstream=not args.no_upstream)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], ensure_ascii=False))
    else:
        sys.stdout.write(checks.render_findings(findings))
    return 1 if any(f.level == checks.PROBLEM for f in findings) else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import storemigrate

    if not args.to.startswith(("postgresql://", "postgres://")):
        raise UsageError("relay migrate: --to: expected a postgresql://user@host/database URL")
    cfg = _load(args)
    if cfg.store.url:
        raise UsageError(f"relay migrate: {cfg.source} already sets [store] url; migrate "
                         "copies the SQLite log named by [store] path")
    sys.stdout.write(storemigrate.render(storemigrate.migrate(cfg.store.path, args.to)))
    return 0


def error_line(e: RelayError) -> str:
    """The one stderr line: prefixed "relay: " unless it already names the command
    ("relay decode: ...")."""
    line = str(e)
    return line if line.startswith(("relay:", "relay ")) else f"relay: {line}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return {"serve": cmd_serve, "decode": cmd_decode, "rotate-key": cmd_rotate,
                "messages": cmd_messages, "purge": cmd_purge, "check": cmd_check,
                "migrate": cmd_migrate}[
            args.command](args)
    except RelayError as e:
        print(error_line(e), file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
