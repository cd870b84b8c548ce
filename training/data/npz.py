"""What an ``.npz`` archive declares, read from its zip directory and ``.npy`` headers only.

A submission-time check must not trust a file it has not loaded: a few kilobytes of deflated
zeros can declare gigabytes (a zip bomb), and an ``.npy`` header can claim any shape. Everything
here reads the zip's central directory and each member's header (a few hundred bytes), never the
array data, except :func:`read_member` which decompresses one member and refuses up front when
that member declares more than the caller allows. A header must agree with the member's declared
uncompressed size, so a shape cannot promise more (or less) data than the archive holds.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from training.data.base import DatasetError

#: members read at most: a MedMNIST file has 6 to 9; a directory of thousands is no dataset
MAX_MEMBERS = 256
_MAX_HEADER_BYTES = 65_536  # numpy writes headers of at most a few KB, version 2 up to 4 GB
# what reading a damaged, encrypted or exotic archive raises: all mean "cannot read this file"
_UNREADABLE = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # a compression method zipfile lacks
    RuntimeError,  # an encrypted member
)


@dataclass(frozen=True)
class ArrayHeader:
    """One member's declared array: shape, dtype and the bytes its data occupies."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int

    def describe(self) -> str:
        return f"{self.dtype} {self.shape}"


def npz_headers(path: Path) -> dict[str, ArrayHeader]:
    """``{array name: header}`` for every ``.npy`` member of the archive at ``path``.

    Raises :class:`DatasetError` naming the file when it is no zip archive, holds too many
    members, a member is no ``.npy`` array, its dtype is an object dtype (numpy would need
    pickle to load it) or its header disagrees with the member's size.
    """
    try:
        archive = zipfile.ZipFile(path)
    except _UNREADABLE as exc:
        message = f"{path}: not an .npz archive (numpy savez/savez_compressed): {exc}"
        raise DatasetError(message) from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise DatasetError(f"{path}: {len(members)} members; an .npz dataset has a handful")
        headers = {}
        for info in members:
            if not info.filename.endswith(".npy"):
                raise DatasetError(f"{path}: member {info.filename!r} is not an .npy array")
            try:
                with archive.open(info) as member:
                    header = _header(path, info, member)
            except _UNREADABLE as exc:
                raise DatasetError(f"{path}: {info.filename} cannot be read: {exc}") from exc
            headers[info.filename.removesuffix(".npy")] = header
    return headers


def read_member(path: Path, name: str, header: ArrayHeader, max_bytes: int) -> np.ndarray:
    """The array ``name`` of the archive (``header``: its :func:`npz_headers` entry),
    decompressed only if it declares at most ``max_bytes``."""
    if header.nbytes > max_bytes:
        raise DatasetError(
            f"{path}: {name} declares {header.nbytes} bytes, over the {max_bytes} this check reads"
        )
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except _UNREADABLE as exc:
        raise DatasetError(f"{path}: {name} cannot be read: {exc}") from exc


def _header(path: Path, info: zipfile.ZipInfo, member: IO[bytes]) -> ArrayHeader:
    name = info.filename.removesuffix(".npy")
    try:
        major, _ = np.lib.format.read_magic(member)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                member, max_header_size=_MAX_HEADER_BYTES
            )
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                member, max_header_size=_MAX_HEADER_BYTES
            )
        else:
            raise ValueError(f"unknown .npy format version {major}")
        header_bytes = member.tell()
    except _UNREADABLE as exc:
        raise DatasetError(f"{path}: {name} is not a readable .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetError(f"{path}: {name} holds Python objects; only plain arrays can be read")
    if any(side < 0 for side in shape):
        raise DatasetError(f"{path}: {name} declares the impossible shape {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize  # object: no int64 overflow
    if header_bytes + nbytes != info.file_size:
        raise DatasetError(
            f"{path}: {name} declares {dtype} {tuple(shape)} ({nbytes} bytes) but the archive "
            f"holds {info.file_size - header_bytes} bytes for it: truncated or forged"
        )
    return ArrayHeader(tuple(int(side) for side in shape), dtype, nbytes)
