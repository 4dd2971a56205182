"""relay.templatebuild: a message's template is checked once when it is made; a part whose
copies would be wrong, or that the template cannot make, is made the reference way."""

from __future__ import annotations

import mimesamples
import numpy as np
import pytest

from relay import template, templatebuild
from relay.fingerprint import prepare
from relay.scheme import SCHEME
from relay.templatepart import PartBase

KEY = bytes(range(32))
SENDER = "ceo@example.com"
QP_HTML = mimesamples.build(mimesamples.prose(), "8bit", "quoted-printable", "utf-8")


def test_utf16_part_is_made_the_reference_way() -> None:
    """A UTF-16 base64 part (not ASCII-compatible) gets no template; its copies are made by
    relay.splice.render, the rest of the message by the template."""
    p = prepare(mimesamples.SAMPLES["skips"], SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p._template is not None
    paths = {pt.path: ok for pt, ok in zip(p._parts, p._template.templated, strict=True)}
    assert paths.get("4") is False and paths.get("9") is True
    assert "utf-16" in p._template.why[[pt.path for pt in p._parts].index("4")]
    for r in ("a@example.com", "b@example.com"):
        bits = p.bits_for(r)
        assert p.copy_for(r) == p._render(bits)


def test_a_part_that_fails_its_check_is_made_the_reference_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A template that would skip an insertion is caught when the message is prepared, and the
    part falls back to the reference renderer: copies stay right."""
    real = template._FlatBuilder.add_part

    def lossy(self: template._FlatBuilder, pb: PartBase, first: int) -> None:
        if pb.at:
            pb = PartBase(pb.part, pb.body, pb.at[:-1], pb.insert[:-1])
        real(self, pb, first)

    monkeypatch.setattr(template._FlatBuilder, "add_part", lossy)
    p = prepare(QP_HTML, SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p._template is None or not any(p._template.templated)
    bits = p.bits_for("a@example.com")
    assert p.copy_with(bits) == p._render(bits)


def test_check_finds_a_template_that_skips_an_insertion() -> None:
    p = prepare(QP_HTML, SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p._template is not None
    carriers = [[(g.start, g.end, " " if pt.subtype == "plain" or g.start < g.end else "",
                  " " if pt.subtype == "plain" else "&nbsp;") for _, g in gaps]
                for pt, gaps in zip(p._parts, p._gaps, strict=True)]
    ones = np.ones(p.carriers, np.uint8)
    assert templatebuild.check(p._template, p._parts, carriers, p._marks, ones) == {}
    flat = next(it for it in p._template.items if isinstance(it, template._Flat) and it.runs)
    run = flat.runs[-1]
    run.pos, run.count = run.pos[:-1], run.count - 1  # the last carrier inserts nothing
    bad = templatebuild.check(p._template, p._parts, carriers, p._marks, ones)
    assert list(bad.values()) == ["another text"]
