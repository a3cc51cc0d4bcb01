"""NumPy ``.npy`` arrays from clients, read without ``np.load``.

Every array a client sends (a predict body, the members of a dataset's ``.npz``) is read here from its own
header: the dtype is checked against the kinds the caller accepts before any data is touched (an object or
structured dtype is never accepted, so nothing can be unpickled), the caller bounds the size from the shape
before anything is allocated, and the data must be exactly the bytes the header describes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

MAX_HEADER_BYTES = 10_000      # numpy's own default bound for an untrusted header
NUMBER_KINDS = "iuf"           # integers and floats (no booleans, complex, strings, dates)
READ_CHUNK_BYTES = 1 << 20


class NpyError(ValueError):
    """Not a readable .npy array; the message says why."""


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"shape {self.shape}, dtype {self.dtype.str!r}"


def read_header(fp: IO[bytes]) -> Header:
    """The header at the start of ``fp``, which is left at the first data byte."""
    try:
        major, _minor = npy_format.read_magic(fp)
        if major == 1:
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp, max_header_size=MAX_HEADER_BYTES)
        elif major == 2:
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"format version {major} is not supported (write it with numpy.save)")
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise NpyError(f"not a .npy array: {str(exc)[:200]}") from None
    return Header(tuple(int(d) for d in shape), bool(fortran), dtype)


def check_kind(header: Header, kinds: str, what: str) -> None:
    if header.dtype.kind not in kinds:      # structured and object dtypes included: their kinds are V and O
        allowed = {"i": "integers", "u": "integers", "f": "floats", "b": "booleans", "U": "strings"}
        names = ", ".join(dict.fromkeys(allowed[k] for k in kinds))
        raise NpyError(f"{what}: dtype {header.dtype.str!r} is not allowed here (send {names})")


def array_from(header: Header, data: bytes | memoryview, offset: int = 0) -> np.ndarray:
    """The array ``header`` describes over ``data[offset:]``, which must hold exactly its bytes (no copy)."""
    have = len(data) - offset
    if have != header.nbytes:
        raise NpyError(f"the .npy data holds {have} bytes where its header ({header.describe()}) needs "
                       f"{header.nbytes}")
    flat = np.frombuffer(data, dtype=header.dtype, count=math.prod(header.shape), offset=offset)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")


def read_stream(fp: IO[bytes], header: Header) -> np.ndarray:
    """The data after ``header`` in ``fp``: exactly its bytes, then the end of the stream. Read a chunk at a
    time into the array itself (the caller has bounded ``header.nbytes``): one read of the whole member made
    two whole-size copies and took 2.3x as long on a 90 MiB archive member."""
    data = np.empty(header.nbytes, np.uint8)
    view = memoryview(data)
    filled = 0
    while filled < header.nbytes:
        chunk = fp.read(min(READ_CHUNK_BYTES, header.nbytes - filled))
        if not chunk:
            break
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled != header.nbytes or fp.read(1):
        raise NpyError(f"the .npy data does not match its header ({header.describe()})")
    return array_from(header, data)
