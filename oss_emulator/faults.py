"""Fault injection for reliability tests.

Spec: comma-separated rules ``KIND:PROBABILITY[@SECONDS][:OPERATION]``, e.g.
``500:0.1,503:0.05,reset:0.02,slow:0.05@2.0,throttle:0.1,500:0.5:UploadPart``.

KIND is one of ``500`` (InternalError), ``503`` (ServiceUnavailable),
``throttle`` (503 TotalQpsLimitExceeded, what OSS returns when the QPS limit is hit),
``429`` (QpsLimitExceeded), ``reset`` (connection closed with RST, no response)
or ``slow`` (sleep SECONDS, default 1.0, then answer normally).
Every request draws one number from a seeded RNG, so a fixed seed and request
order gives a reproducible fault sequence.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import List, Optional

KINDS = ('500', '503', 'throttle', '429', 'reset', 'slow')


@dataclass(frozen=True)
class FaultRule:
    kind: str
    probability: float
    delay: float = 1.0
    operation: Optional[str] = None

    def spec(self) -> str:
        s = '%s:%g' % (self.kind, self.probability)
        if self.kind == 'slow':
            s += '@%g' % self.delay
        if self.operation:
            s += ':' + self.operation
        return s


def parse_spec(spec: Optional[str]) -> List[FaultRule]:
    rules: List[FaultRule] = []
    for item in (spec or '').replace('\n', ',').split(','):
        item = item.strip()
        if not item:
            continue
        fields = item.split(':')
        if len(fields) not in (2, 3):
            raise ValueError('bad fault rule %r' % item)
        kind = fields[0].strip().lower()
        if kind not in KINDS:
            raise ValueError('unknown fault kind %r (known: %s)' % (kind, ', '.join(KINDS)))
        prob_s, _, delay_s = fields[1].partition('@')
        prob = float(prob_s)
        if not 0.0 <= prob <= 1.0:
            raise ValueError('probability out of range in %r' % item)
        delay = float(delay_s) if delay_s else 1.0
        op = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
        rules.append(FaultRule(kind, prob, delay, op))
    return rules


class FaultInjector:
    def __init__(self, spec: Optional[str] = None, seed: Optional[int] = None):
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: List[FaultRule] = parse_spec(spec)

    def set_spec(self, spec: Optional[str]) -> None:
        rules = parse_spec(spec)  # parse before swapping so a bad spec keeps the old one
        with self._lock:
            self._rules = rules

    def spec(self) -> str:
        return ','.join(r.spec() for r in self._rules)

    def delays(self) -> bool:
        """Whether some request may be made to sleep (a ``slow`` rule)."""
        return any(r.kind == 'slow' for r in self._rules)

    def choose(self, operation: str) -> Optional[FaultRule]:
        rules = self._rules
        if not rules:
            return None
        with self._lock:
            x = self._rng.random()
        acc = 0.0
        for r in rules:
            if r.operation is not None and r.operation != operation:
                continue
            acc += r.probability
            if x < acc:
                return r
        return None
