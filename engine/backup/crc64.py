"""CRC-64/Jones, the checksum Redis puts at the end of RDB files and DUMP payloads, in pure Python.

Redis's crc64 (src/crc64.c) is the Jones polynomial 0xad93d23594c935a9, bit-reflected, init 0, no
final xor: crc64(b"123456789") == 0xe9c6d914c4b8d9ca.

A byte-at-a-time loop runs at ~11 MB/s in CPython and slicing-by-8 at ~16 MB/s: the interpreter,
not the arithmetic, is the limit. `crc64` instead runs 4096 CRCs side by side with C-speed bulk
operations. A block of BLOCK bytes is cut into LANES contiguous lanes; each lane's CRC state is kept
as 8 "byte planes" (plane k = byte k of every lane's state, one `bytes` per plane), so one step of
the table-driven update, for all lanes at once, is a strided slice (the next byte of every lane),
`bytes.translate` (the table lookup, one table per output byte) and big-integer XOR. The lane CRCs
are then folded pairwise (a tree) with the linear map "append n zero bytes", itself a 64x64 matrix
over GF(2) applied plane-wise with translate tables, computed once per lane length.

Two properties of a CRC with init 0 and no final xor make blocks composable:
- leading zero bytes change nothing, so a short block is padded in front to a full block;
- a running state s is the same as XOR-ing s (little-endian) into the next 8 message bytes.
"""

from __future__ import annotations

from functools import cache

POLY = 0xAD93D23594C935A9  # as Redis writes it (normal form)
POLY_REFLECTED = 0x95AC9329AC4BC9B5
CHECK = 0xE9C6D914C4B8D9CA  # crc64(b"123456789")

LANES = 4096
LANE_BYTES = 256
BLOCK = LANES * LANE_BYTES  # 1 MiB per block
SMALL = 64 * 1024  # below this, the plain table loop is quicker than building a padded block


def _byte_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


TABLE = _byte_table()


def crc64_bytewise(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The reference: one table lookup per byte (Redis's crc64 before its slicing-by-16 rewrite)."""
    table = TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


# -- GF(2) linear maps on 64-bit states: a map is the list of the images of the 64 unit vectors ----
def _apply(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """a after b."""
    return [_apply(a, column) for column in b]


def _zeros(nbytes: int) -> list[int]:
    """The map "feed nbytes zero bytes" on a CRC state."""
    step = [TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(64)]
    result = [1 << i for i in range(64)]
    while nbytes:
        if nbytes & 1:
            result = _compose(step, result)
        nbytes >>= 1
        if nbytes:
            step = _compose(step, step)
    return result


def _plane_tables(matrix: list[int]) -> list[list[bytes]]:
    """tables[k][o]: a 256-byte translate table giving byte o of matrix(b << 8k) for every byte b."""
    out = []
    for k in range(8):
        images = [0] * 256
        for bit in range(8):
            images[1 << bit] = matrix[8 * k + bit]
        for b in range(3, 256):
            low = b & -b
            if b != low:
                images[b] = images[b ^ low] ^ images[low]
        out.append([bytes((images[b] >> (8 * o)) & 0xFF for b in range(256)) for o in range(8)])
    return out


@cache
def _update_tables() -> tuple[bytes, ...]:
    """Byte k of TABLE[b] for every b, as 8 translate tables."""
    return tuple(bytes((TABLE[b] >> (8 * k)) & 0xFF for b in range(256)) for k in range(8))


@cache
def _fold_tables(lanes: int, lane_bytes: int) -> tuple[list[list[bytes]], ...]:
    """Per tree level, the translate tables of "append lane_bytes * 2**level zero bytes"."""
    levels = []
    matrix = _zeros(lane_bytes)
    size = lanes
    while size > 1:
        levels.append(_plane_tables(matrix))
        matrix = _compose(matrix, matrix)
        size //= 2
    return tuple(levels)


def _block(buf: bytes, lanes: int, lane_bytes: int) -> int:
    """CRC (from state 0) of exactly lanes * lane_bytes bytes."""
    fb = int.from_bytes
    t0, t1, t2, t3, t4, t5, t6, t7 = _update_tables()
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 0
    for j in range(lane_bytes):
        idx = (p0 ^ fb(buf[j::lane_bytes], "little")).to_bytes(lanes, "little")
        p0 = p1 ^ fb(idx.translate(t0), "little")
        p1 = p2 ^ fb(idx.translate(t1), "little")
        p2 = p3 ^ fb(idx.translate(t2), "little")
        p3 = p4 ^ fb(idx.translate(t3), "little")
        p4 = p5 ^ fb(idx.translate(t4), "little")
        p5 = p6 ^ fb(idx.translate(t5), "little")
        p6 = p7 ^ fb(idx.translate(t6), "little")
        p7 = fb(idx.translate(t7), "little")
    planes = [p.to_bytes(lanes, "little") for p in (p0, p1, p2, p3, p4, p5, p6, p7)]
    size = lanes
    for tables in _fold_tables(lanes, lane_bytes):
        half = size // 2
        left = [p[0::2] for p in planes]  # earlier lanes: shifted past their right neighbour
        folded = []
        for o in range(8):
            acc = fb(planes[o][1::2], "little")
            for k in range(8):
                acc ^= fb(left[k].translate(tables[k][o]), "little")
            folded.append(acc.to_bytes(half, "little"))
        planes, size = folded, half
    return sum(planes[k][0] << (8 * k) for k in range(8))


def _chunk(data: bytes | memoryview, crc: int, lanes: int, lane_bytes: int) -> int:
    """CRC of up to lanes * lane_bytes bytes continuing from state `crc`."""
    size = lanes * lane_bytes
    n = len(data)
    if n < 8:
        return crc64_bytewise(data, crc)
    head = (int.from_bytes(data[:8], "little") ^ crc).to_bytes(8, "little")
    buf = b"".join((bytes(size - n), head, bytes(data[8:])))
    return _block(buf, lanes, lane_bytes)


def crc64(
    data: bytes | bytearray | memoryview, crc: int = 0, *, lanes: int = LANES, lane_bytes: int = LANE_BYTES
) -> int:
    """Redis's crc64 of `data`, continuing from `crc` (0 to start)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(view) < SMALL and lanes == LANES:
        return crc64_bytewise(view, crc)
    if lanes & (lanes - 1) or lanes < 1 or lane_bytes < 1:
        raise ValueError("lanes must be a power of two and lane_bytes positive")
    size = lanes * lane_bytes
    for start in range(0, len(view), size):
        crc = _chunk(view[start : start + size], crc, lanes, lane_bytes)
    return crc


class Crc64:
    """Incremental crc64: feed chunks of any size, read `value` at the end."""

    def __init__(self) -> None:
        self.value = 0
        self._pending = bytearray()
        self.length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        self.length += len(data)
        if len(self._pending) >= BLOCK:
            whole = len(self._pending) - len(self._pending) % BLOCK
            self.value = crc64(memoryview(self._pending)[:whole], self.value)
            del self._pending[:whole]

    def digest(self) -> int:
        if self._pending:
            self.value = crc64(self._pending, self.value)
            self._pending.clear()
        return self.value
