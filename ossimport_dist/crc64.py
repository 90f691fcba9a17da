"""CRC64-ECMA exactly as OSS reports it in ``x-oss-hash-crc64ecma`` (the CRC-64/XZ model).

fastcrc (SIMD, about 20 GB/s here) does the byte crunching where its wheel installs; crcmod's C
extension (about 0.4 GB/s, byte at a time) otherwise. At crcmod's speed the CRC alone was close to
half of a worker's CPU per large file. Joining the CRCs of multipart parts uses the combine
function oss2 exports, so a multipart object is verified without reading it twice.
"""

from __future__ import annotations

import functools

_POLY = 0x142F0E1EBA9EA3693
_XOROUT = 0xFFFFFFFFFFFFFFFF

# Pure functions (no state between calls): crc = _crc_fun(data, previous_crc) chains.
try:
    from fastcrc import crc64 as _fast

    def _crc_fun(data, crc: int = 0) -> int:
        # Any contiguous buffer (bytes, bytearray, memoryview) as it is: no copy.
        return _fast.xz(data, initial=crc)

    IMPLEMENTATION = "fastcrc"
except ImportError:  # a platform without its wheel
    import crcmod

    _crc_fun = crcmod.mkCrcFun(_POLY, initCrc=0, xorOut=_XOROUT, rev=True)
    IMPLEMENTATION = "crcmod"


@functools.lru_cache(maxsize=None)
def _combine_fun():
    # Imported when first needed (a multipart object): importing oss2 costs a quarter of a second,
    # which a job of small files would pay before its first PUT.
    from oss2.crc64_combine import mkCombineFun

    return mkCombineFun(_POLY, 0, True, _XOROUT)


def crc64(data, crc: int = 0) -> int:
    """CRC64 of ``data``; pass the CRC of the preceding bytes as ``crc`` to continue it."""
    return _crc_fun(data, crc)


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC64 of A+B from crc(A), crc(B) and len(B)."""
    if len2 == 0:
        return crc1
    return _combine_fun()(crc1, crc2, len2)


class Crc64:
    """Incremental CRC64 for data arriving in chunks."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0):
        self.value = value

    def update(self, data) -> None:
        self.value = _crc_fun(data, self.value)
