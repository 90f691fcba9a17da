"""Which listed objects a job takes: ``srcIncludePattern``, ``srcExcludePattern``, ``minSize``,
``maxSize`` (and ``importSince``, kept with the split limits).

Patterns are globs on the key relative to the source, comma-separated, as rclone's
``--include``/``--exclude`` read them: ``*`` and ``?`` stop at ``/``, ``**`` crosses it, ``[...]``
is a class. A pattern with a ``/`` is matched against the whole key, one without against the
file name at any depth (``*.log`` takes ``a/b/x.log``). A key is taken when it matches an
include pattern (any key, when there is none), no exclude pattern, and its size is within
``minSize``..``maxSize`` (0: no bound). The scan applies the selection, so a job's tasks hold
only what it takes, and ``plan`` counts what it leaves out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from .models import ObjectEntry

# Why an entry is left out, as plan counts them.
BY_PATTERN = "pattern"
BY_SIZE = "size"


class PatternError(ValueError):
    """A pattern that cannot be read (an unclosed '[')."""


def _translate(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            # A ']' first in the class is one of its characters, as in fnmatch.
            end = glob.find("]", i + 3 if glob.startswith(("[!", "[^"), i) else i + 2)
            if end < 0:
                raise PatternError(f"'{glob}': '[' at character {i + 1} is never closed")
            body = glob[i + 1:end]
            negated = body[:1] in ("!", "^")
            # Every character of the class is itself but '-' (a range): '[', '\\', '&&'... too.
            body = "".join(ch if ch == "-" else re.escape(ch) for ch in (body[1:] if negated else body))
            out.append("[" + ("^" if negated else "") + body + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern = field(compare=False)
    whole_key: bool  # has a '/': matched against the whole key, else against the file name

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        body = text[1:] if text.startswith("/") else text  # '/x' is x at the top, as rclone has it
        try:
            regex = re.compile(_translate(body) + r"\Z", re.S)
        except re.error as exc:  # a class like [z-a]
            raise PatternError(f"'{text}': {exc}") from None
        return cls(text, regex, "/" in text)

    def matches(self, key: str) -> bool:
        return bool(self.regex.match(key if self.whole_key else key.rsplit("/", 1)[-1]))


def parse_patterns(text: str) -> tuple:
    """The patterns of a comma-separated list; PatternError naming the one that does not read."""
    return tuple(Pattern.parse(p.strip()) for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class Selection:
    include: tuple = ()
    exclude: tuple = ()
    min_size: int = 0
    max_size: int = 0  # 0: no bound

    @classmethod
    def from_job(cls, job_cfg) -> "Selection":
        return cls(parse_patterns(job_cfg.src_include_pattern), parse_patterns(job_cfg.src_exclude_pattern),
                   job_cfg.min_size, job_cfg.max_size)

    @property
    def everything(self) -> bool:
        return not (self.include or self.exclude or self.min_size or self.max_size)

    def left_out(self, entry: ObjectEntry) -> Optional[str]:
        """Why the job does not take ``entry`` (BY_PATTERN, BY_SIZE), None when it does. An entry
        the listing refused (a FIFO) has no size to judge: only the patterns apply to it."""
        key = entry.key
        if self.include and not any(p.matches(key) for p in self.include):
            return BY_PATTERN
        if any(p.matches(key) for p in self.exclude):
            return BY_PATTERN
        if not entry.refused and (entry.size < self.min_size or (self.max_size and entry.size > self.max_size)):
            return BY_SIZE
        return None
