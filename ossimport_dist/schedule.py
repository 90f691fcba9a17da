"""``workerMaxThroughputSchedule``: a worker's bandwidth cap by time of day, in rclone's
``--bwlimit`` timetable form.

    workerMaxThroughputSchedule=08:00,10240 19:00,off

Each slot is ``HH:MM[:SS],VALUE`` (whitespace between slots), VALUE a cap in KB/s or ``off``
(no cap). A slot holds from its time until the next slot's, every day; before the first slot of
the day the last one holds (from the evening before). Times are the worker's local time. While
a schedule is set it is the worker's cap, in place of ``workerMaxThroughput(KB/s)``; the
service and every agent look at it every few seconds, so a slot takes effect within seconds of
its edge.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Optional

DAY_S = 86400
_SLOT = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?,(\d+|off)\Z", re.I)


class ScheduleError(ValueError):
    """A timetable that does not read; the message names the slot and the form."""


@dataclass(frozen=True)
class Slot:
    second_of_day: int
    kbs: int  # 0: no cap ("off")

    @property
    def clock(self) -> str:
        h, rest = divmod(self.second_of_day, 3600)
        m, s = divmod(rest, 60)
        return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")

    @property
    def value(self) -> str:
        return f"{self.kbs} KB/s" if self.kbs else "off"


@dataclass(frozen=True)
class Timetable:
    slots: tuple  # Slots, by time of day

    @classmethod
    def parse(cls, text: str) -> Optional["Timetable"]:
        """The timetable of ``text``; None when it is empty (no schedule)."""
        slots = {}
        for word in text.split():
            m = _SLOT.match(word)
            if not m:
                raise ScheduleError(f"'{word}' is not a slot: write HH:MM,KB/s or HH:MM,off, slots separated "
                                    f"by spaces, e.g. 08:00,10240 19:00,off")
            hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
            if hours > 23 or minutes > 59 or seconds > 59:
                raise ScheduleError(f"'{word}': {m.group(1)}:{m.group(2)} is not a time of day (00:00 to 23:59)")
            at = hours * 3600 + minutes * 60 + seconds
            if at in slots:
                raise ScheduleError(f"'{word}': two slots start at {Slot(at, 0).clock}")
            slots[at] = Slot(at, 0 if m.group(4).lower() == "off" else int(m.group(4)))
        if not slots:
            return None
        return cls(tuple(slots[k] for k in sorted(slots)))

    def slot_at(self, when: float) -> tuple:
        """(the slot holding at ``when``, the next slot, seconds until its edge), local time."""
        now = time.localtime(when)
        second = now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec
        current = self.slots[-1]  # before the first slot of the day: the evening's last
        for slot in self.slots:
            if slot.second_of_day <= second:
                current = slot
        following = self.slots[(self.slots.index(current) + 1) % len(self.slots)]
        wait = (following.second_of_day - second) % DAY_S or DAY_S
        return current, following, wait

    def bytes_per_s(self, when: float) -> int:
        return self.slot_at(when)[0].kbs * 1024


def describe(timetable: Timetable, when: float) -> str:
    """How 'stat' says it: the cap now and the next change."""
    current, following, _ = timetable.slot_at(when)
    if following == current:
        return f"{current.value} all day (workerMaxThroughputSchedule)"
    return (f"{current.value} now (since {current.clock}), {following.value} from {following.clock} "
            f"(workerMaxThroughputSchedule)")
