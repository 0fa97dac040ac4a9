"""Verification `.bin` files (LFW / CFP-FP / AgeDB-30): a pickle of `(bins, issame_list)`.

`bins` holds 2N encoded images (consecutive pairs) as bytes or uint8 numpy arrays (cfp_fp, agedb_30),
`issame_list` N booleans. `.bin` files come from elsewhere, so they are read with a restricted
unpickler: its `find_class` hands out no real class or function, only stand-ins that rebuild bytes,
uint8/bool arrays and their dtypes from checked arguments. Any other global is refused before anything
runs. Python 2 pickles are read with the `encoding='bytes'` fallback.
"""
from __future__ import annotations

import io
import math
import pickle
import pickletools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from faceflow.data.atomic import atomic_file
from faceflow.errors import DataFormatError

_DTYPES = {"u1": np.uint8, "b1": np.bool_}  # what a `.bin` array may hold: JPEG bytes, pair flags
_LATIN1 = ("latin1", "latin-1", "iso-8859-1")


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the `.bin` allow-list (message: `module.name`)."""


class _Malformed(pickle.UnpicklingError):
    """A stand-in got arguments a real `.bin` never holds."""


def _text(value: object) -> str:
    """A pickled name or code as str (Python 2 pickles read with encoding='bytes' give bytes)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise _Malformed(f"expected a string, got {type(value).__name__}")


class _Dtype:
    """Stand-in for `numpy.dtype(code, align, copy)`; BUILD gives it numpy's dtype state, checked here."""

    __slots__ = ("type",)

    def __init__(self, code: object, *_flags: object):
        name = _text(code)
        if name not in _DTYPES:
            raise _Malformed(f"array dtype {name!r} (a .bin holds uint8 or bool arrays)")
        self.type = _DTYPES[name]

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and _text(state[1]) in "|<>="):
            raise _Malformed("dtype state")


class _Array:
    """An array rebuilt from checked arguments. Made empty by `_reconstruct(ndarray, shape, code)`, then
    BUILD passes numpy's array state `(version, shape, dtype, fortran, data)`, checked here."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray | None = None) -> None:
        self.value = value

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Malformed("array state")
        _, shape, dtype, fortran, data = state
        self.value = _array_from(data, dtype, shape, "F" if fortran else "C")


def _array_from(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """A copy of `data` as an array of `shape`, after checking every argument."""
    if not isinstance(dtype, _Dtype):
        raise _Malformed("array without a uint8 or bool dtype")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Malformed("array shape")
    if not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape):
        raise _Malformed("array data does not match its shape")
    return np.frombuffer(bytes(data), dtype.type).reshape(shape, order=_text(order)).copy()


def _reconstruct(subtype: object, shape: object, code: object) -> _Array:
    """Stand-in for `numpy.core.multiarray._reconstruct` (protocol 0-4 array pickles)."""
    if not isinstance(subtype, _Token):
        raise _Malformed("_reconstruct of something other than numpy.ndarray")
    return _Array()


def _frombuffer(data: object, dtype: object, shape: object, order: object) -> _Array:
    """Stand-in for `numpy.core.numeric._frombuffer` (protocol 5 array pickles)."""
    return _Array(_array_from(data, dtype, shape, order))


def _scalar(dtype: object, data: object) -> bool:
    """Stand-in for `numpy.core.multiarray.scalar`: a numpy bool (an `issame` flag), as a Python bool."""
    if not (isinstance(dtype, _Dtype) and dtype.type is np.bool_ and isinstance(data, bytes) and len(data) == 1):
        raise _Malformed("a numpy scalar other than a bool")
    return data != b"\0"


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    """Stand-in for `_codecs.encode(str, 'latin1')`: how Python 3 writes bytes in protocol 0-2 pickles."""
    if not isinstance(text, str) or _text(encoding).lower() not in _LATIN1:
        raise _Malformed("_codecs.encode of something other than a latin-1 string")
    return text.encode("latin-1")


def _bytes_like(kind: type) -> Callable[..., bytes | bytearray]:
    """Stand-in for `bytes(...)`/`bytearray(...)` as protocol 0-2 pickles call them: (), (bytes,) or (str, latin1)."""
    def build(*args: object) -> bytes | bytearray:
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)) or not args:
            return kind(*args)
        return kind(_encode(*args))
    return build


class _Token:
    """Stands for `numpy.ndarray` as `_reconstruct`'s first argument: not callable, no attributes."""

    __slots__ = ()


def _stand_in(function: Callable[..., object]) -> object:
    """A callable without attributes wrapping `function`: a pickle's BUILD cannot alter it."""
    return type(f"_{function.__name__}", (), {"__slots__": (), "__call__": staticmethod(function)})()


_ALLOWED: dict[tuple[str, str], object] = {
    **dict.fromkeys([("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")],
                    _stand_in(_reconstruct)),
    **dict.fromkeys([("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")],
                    _stand_in(_frombuffer)),
    **dict.fromkeys([("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")],
                    _stand_in(_scalar)),
    ("numpy", "ndarray"): _Token(),
    ("numpy", "dtype"): _stand_in(_Dtype),
    ("_codecs", "encode"): _stand_in(_encode),
    **dict.fromkeys([("builtins", "bytes"), ("__builtin__", "bytes")], _stand_in(_bytes_like(bytes))),
    **dict.fromkeys([("builtins", "bytearray"), ("__builtin__", "bytearray")], _stand_in(_bytes_like(bytearray))),
}


class _BinUnpickler(pickle.Unpickler):
    """Unpickler whose globals are the stand-ins of `_ALLOWED` (every other one is refused)."""

    def find_class(self, module: str, name: str) -> object:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return found

    def persistent_load(self, pid: object) -> object:
        raise _RefusedGlobal("a persistent id")


def _check_memo_indexes(raw: bytes) -> None:
    """Refuse memo indexes a pickler never writes: CPython's unpickler sizes (and zero-fills) its memo
    to twice the largest index, so one PUT of 2^30 would take gigabytes. Picklers number memo entries
    in order, so an index never exceeds the opcodes before it."""
    for count, (opcode, arg, position) in enumerate(pickletools.genops(raw)):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
            raise _Malformed(f"memo index {arg} at byte offset {position}")


def _unpickle(raw: bytes, encoding: str) -> object:
    _check_memo_indexes(raw)
    return _BinUnpickler(io.BytesIO(raw), encoding=encoding).load()


def _image_bytes(item: object, path: Path, index: int) -> bytes:
    if isinstance(item, _Array):
        item = item.value
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    raise DataFormatError(f"{path}: bins[{index}]: expected encoded image bytes, got {_kind(item)}")


def _flag(item: object, path: Path, index: int) -> bool:
    if isinstance(item, (bool, np.bool_)) or (type(item) is int and item in (0, 1)):
        return bool(item)
    raise DataFormatError(f"{path}: issame_list[{index}]: expected a bool, got {_kind(item)}")


def _kind(item: object) -> str:
    if isinstance(item, np.ndarray):
        return f"a {item.dtype} array"
    if isinstance(item, int):
        return f"the int {item}"
    return type(item).__name__.lstrip("_")


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Encoded images and the per-pair `issame` bool array of a verification `.bin` (validated; the
    pickle may reference only the numpy array globals a `.bin` holds, nothing else is loaded or run)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read: {err.strerror}") from None
    try:
        try:
            obj = _unpickle(raw, "ASCII")
        except UnicodeDecodeError:
            obj = _unpickle(raw, "bytes")
    except _RefusedGlobal as err:
        raise DataFormatError(f"{path}: refused pickle global {err} (a .bin holds only images, uint8 arrays "
                              f"and bools; nothing was loaded or run)") from None
    except _Malformed as err:
        raise DataFormatError(f"{path}: not a verification pickle: {err}") from None
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataFormatError(
            f"{path}: not a verification pickle ({type(err).__name__}: {str(err)[:80]})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataFormatError(f"{path}: expected a pickled (bins, issame_list) pair, got {_kind(obj)}")
    bins, issame = obj
    if isinstance(issame, _Array):
        issame = issame.value
    for name, value in (("bins", bins), ("issame_list", issame)):
        if not isinstance(value, (tuple, list, np.ndarray)):
            raise DataFormatError(f"{path}: {name}: expected a list, got {_kind(value)}")
    images = [_image_bytes(item, path, i) for i, item in enumerate(bins)]
    flags = np.array([_flag(item, path, i) for i, item in enumerate(issame)], dtype=bool)
    if len(images) % 2:
        raise DataFormatError(f"{path}: odd image count {len(images)} (images come in pairs)")
    if len(images) != 2 * len(flags):
        raise DataFormatError(f"{path}: issame_list has {len(flags)} entries but there are {len(images)} images "
                              f"({len(images) // 2} pairs)")
    return images, flags


def write_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write a verification `.bin` atomically (rejects odd image counts and mismatched issame)."""
    images = [bytes(im) for im in images]
    flags = [bool(x) for x in issame]
    if len(images) % 2 or len(images) != 2 * len(flags):
        raise ValueError(f"{len(images)} images do not make {len(flags)} pairs")
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((images, flags), f, protocol=4)
