"""Test helper: render HTML (or a plain-text mail) to an image with headless Chromium.

Used by the OCR tests to make screenshots whose word gaps are known. Chromium writes PNG, or
JPEG when the output name ends in .jpg (its own encoder, default quality).
"""

from __future__ import annotations

import functools
import html
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
)
PROPORTIONAL = "Arial, 'Liberation Sans', sans-serif"
MONOSPACE = "'DejaVu Sans Mono', 'Liberation Mono', monospace"


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def render_html(
    page: str,
    *,
    width: int = 800,
    height: int = 600,
    scale: float = 1,
    fmt: str = "png",
    timeout: float = 60,
) -> bytes:
    """Screenshot `page` (a full HTML document) in a width x height CSS-pixel window at the
    given device scale factor; returns the PNG (fmt="png") or JPEG (fmt="jpg") bytes."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium not found")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"unsupported format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        src = Path(tmp, "page.html")
        src.write_text(page, encoding="utf-8")
        out = Path(tmp, f"shot.{fmt}")
        cmd = [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(tmp, 'profile')}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            f"--force-device-scale-factor={scale:g}",
            src.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if not out.exists():
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {tail}")
        return out.read_bytes()


def _page(body: str, style: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><style>"
        f"body {{ margin: 16px; background: #fff; color: #222; {style} }}"
        "p { margin: 0 0 1em 0; }"
        f"</style></head><body>{body}</body></html>"
    )


def html_mail(
    paragraphs: list[str], *, font_px: int = 15, width_px: int = 640, justify: bool = False
) -> str:
    """An HTML mail body as a mail client shows it. `paragraphs` are HTML fragments (already
    escaped, doubled gaps written `&nbsp; `)."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    style = f"font-family: {PROPORTIONAL}; font-size: {font_px}px; max-width: {width_px}px;"
    if justify:
        style += " text-align: justify;"
    return _page(body, style)


def plain_mail(text: str, *, monospace: bool, font_px: int = 14, width_px: int = 680) -> str:
    """A plain-text mail as a client shows it: white-space: pre-wrap, so that two spaces stay
    two spaces, in a monospace or a proportional font."""
    family = MONOSPACE if monospace else PROPORTIONAL
    style = (
        f"font-family: {family}; font-size: {font_px}px; max-width: {width_px}px;"
        " white-space: pre-wrap;"
    )
    body = f"<div style='font-family: {family}'>{html.escape(text, quote=False)}</div>"
    return _page(body, style)


def page_height(n_lines: int, *, font_px: int, margin: int = 40) -> int:
    """A window height (CSS px) tall enough for `n_lines` lines of text (at least 200: headless
    Chromium paints only the first line or so of a window 120 px tall or less)."""
    return max(200, margin + math.ceil(n_lines * font_px * 1.4))


OFFLINE_FLAGS = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


@functools.cache
def _no_network() -> tuple[str, ...]:
    """A command prefix that runs a program with no network at all (a network namespace of its
    own, as root), or () where this process may not make one."""
    try:
        ok = subprocess.run(["unshare", "--net", "true"], capture_output=True,
                            check=False).returncode == 0
    except OSError:
        ok = False
    return ("unshare", "--net") if ok else ()


def _chromium(page: str, flags: list[str], out_name: str | None, timeout: float,
              offline: bool) -> bytes:
    """Run headless Chromium on `page` with `flags` ({out} = the output file). offline: with no
    network (its own network namespace where possible; always a dead proxy and no DNS)."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium not found")
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        src = Path(tmp, "page.html")
        src.write_text(page, encoding="utf-8")
        out = Path(tmp, out_name) if out_name else None
        cmd = [*(_no_network() if offline else ()), exe, *CHROMIUM_FLAGS,
               *(OFFLINE_FLAGS if offline else ()), f"--user-data-dir={Path(tmp, 'profile')}",
               *[f.format(out=out) for f in flags], src.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if out is None:
            return proc.stdout
        if not out.exists():
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise RuntimeError(f"chromium wrote no {out_name} (exit {proc.returncode}): {tail}")
        return out.read_bytes()


def screenshot(page: str, *, width: int, height: int, offline: bool = False,
               timeout: float = 90) -> bytes:
    """PNG of `page` in a width x height window (CSS px, scale 1), taken once the page and its
    images have loaded (a virtual time budget: without one, a busy machine could shoot before
    an inline image was decoded)."""
    return _chromium(page, ["--screenshot={out}", f"--window-size={width},{height}",
                            "--force-device-scale-factor=1", "--virtual-time-budget=10000"],
                     "shot.png", timeout, offline)


def print_pdf(page: str, *, offline: bool = False, timeout: float = 90) -> bytes:
    """Print `page` to PDF as a browser's print dialog would (paper size from its @page rule,
    else Chromium's default), without headers and footers."""
    return _chromium(page, ["--print-to-pdf={out}", "--no-pdf-header-footer"], "page.pdf",
                     timeout, offline)


def dump_dom(page: str, *, offline: bool = False, timeout: float = 60) -> str:
    """The DOM Chromium built from `page`, serialised (what was parsed, not the source)."""
    return _chromium(page, ["--dump-dom"], None, timeout, offline).decode("utf-8", "replace")
