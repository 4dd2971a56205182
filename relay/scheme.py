"""The signing scheme: everything a message is signed with but the key (code version, word
rate, word-carrier blocks and how they are cut, the carrier rules), logged with each message so
that its retries re-sign it and a decode reads it the way it was first signed; and `bias`, the
share of each class of gap a recipient's code doubles.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .carriers import RULES, SENTENCE, WORD


def bias(cls: int, word_rate: float) -> float:
    if cls == SENTENCE:
        return 0.5
    if cls == WORD:
        return word_rate
    return 0.0


BLOCK = 48  # word carriers per block (0 in the log: independent bits, the code before blocks)


class Cut(enum.IntEnum):
    """How a message's word carriers are cut into blocks (stored with each message, so a
    message is always decoded and re-signed the way it was first signed)."""

    EVEN = 0  # equal blocks; each doubles floor(size * rate): wastes up to one double a block
    UNITS = 1  # blocks made of whole budget units (6 gaps holding 1 double at rate 1/6), cut
    #            within the groups of word_runs: each group of n gaps doubles floor(n * rate)
    #            in all, and no block, and so no rendering, more than its rate


EVEN, UNITS = Cut.EVEN, Cut.UNITS
CUT = UNITS

# Code versions: how a recipient's 64-bit values are drawn (stored with each message).
V2 = 2  # one SHAKE-256 stream per recipient, read at each carrier key's rank among all the
#         message's carrier keys: scoring an excerpt reads every recipient's whole stream
V3 = 3  # one SHAKE-256 stream per CHUNK consecutive positions of the message's reading order:
#         scoring an excerpt reads only the chunks holding its carriers and their blocks
VERSIONS = (V2, V3)
CHUNK = 136  # v3: carrier positions per keyed stream: 136 values of 8 bytes fill exactly 8
#              SHAKE-256 output blocks (136 bytes each), no squeezed byte wasted; measured
#              against 64, 128 and 256 (README "Speed", code v3)


@dataclass(frozen=True)
class Scheme:
    """Everything a message is signed with but the key: logged with the message, so that its
    retries re-sign it and a decode reads it the way it was first signed."""

    version: int  # V2 or V3
    word_rate: float  # share of word gaps doubled (config.PROFILES)
    block: int = BLOCK  # word carriers per block; 0: independent bits (before blocks)
    cut: Cut = CUT  # how blocks are cut
    rules: int = RULES  # carriers.RULES the carriers were found with (0: before them)

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown code version {self.version}")
        object.__setattr__(self, "cut", Cut(self.cut))  # ValueError for an unknown cut

    def with_rate(self, word_rate: float) -> Scheme:
        return replace(self, word_rate=word_rate)


SCHEME = Scheme(V3, 1 / 6, BLOCK, UNITS, RULES)  # new mail (word rate: the config's profile)
