"""Read a PyTorch `torch.save` file of tensors (a state dict) without PyTorch, executing nothing from it.

Both formats are read: the zip archive of torch >= 1.6 (`*/data.pkl` + raw storages `*/data/KEY`) and the
legacy stream (magic number, protocol, system info, the pickle, the storage keys, then each storage as an
int64 element count and its bytes). The pickle goes through a restricted unpickler that admits only the
globals a tensor state dict needs (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`,
`collections.OrderedDict`, `torch.*Storage` in persistent ids); each resolves to a stand-in defined here,
never to code of the file's choosing, and any other global is refused with one line. Tensors come back as
NumPy arrays (little-endian storages only, bounds checked against their storage).
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from faceflow.errors import DataFormatError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"), "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class StorageType:
    """Stand-in for `torch.FloatStorage` & co.: the element type of a storage."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        """NumPy dtype of one element (bfloat16 as its raw uint16 bits)."""
        return _STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class StorageRef:
    """A persistent-id storage: where its bytes are and how many elements it holds (None: read from the file)."""

    key: str
    type: StorageType
    numel: int | None


@dataclass(frozen=True)
class TensorRef:
    """What `_rebuild_tensor_v2` was asked to build; turned into an array once the storages are known."""

    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> TensorRef:
    return TensorRef(storage, offset, tuple(size) if isinstance(size, (tuple, list)) else size,
                     tuple(stride) if isinstance(stride, (tuple, list)) else stride)


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


_ADMITTED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch", name): StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are the stand-ins of `_ADMITTED` and whose persistent ids are storages."""

    def __init__(self, stream: io.BufferedIOBase, where: str) -> None:
        super().__init__(stream)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ADMITTED:
            raise DataFormatError(f"{self.where}: refused: the pickle asks for {module}.{name}, which a tensor "
                                  f"state dict never needs (nothing was run)")
        return _ADMITTED[(module, name)]

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], (str, int))):
            raise DataFormatError(f"{self.where}: refused: persistent id {str(pid)[:80]!r} is not a tensor storage")
        numel = pid[4]
        return StorageRef(str(pid[2]), pid[1], numel if isinstance(numel, int) else None)


def _unpickle(data: bytes | io.BufferedIOBase, where: str) -> Any:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return _RestrictedUnpickler(stream, where).load()
    except DataFormatError:
        raise
    except Exception as err:  # a truncated or corrupt pickle raises many types
        raise DataFormatError(f"{where}: not a readable PyTorch pickle ({type(err).__name__}: {err})") from None


def _as_array(ref: TensorRef, storages: Callable[[StorageRef], np.ndarray], where: str) -> np.ndarray:
    """The tensor `ref` as a contiguous array, after checking its view lies inside its storage."""
    if not isinstance(ref.storage, StorageRef) or not all(
            isinstance(v, int) and v >= 0 for v in (ref.offset, *ref.size, *ref.stride)) \
            or len(ref.size) != len(ref.stride):
        raise DataFormatError(f"{where}: malformed tensor (offset {ref.offset!r}, size {ref.size!r}, "
                              f"stride {ref.stride!r})")
    flat = storages(ref.storage)
    count = int(np.prod(ref.size, dtype=np.int64)) if ref.size else 1
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) if count else ref.offset - 1
    if last >= flat.size:
        raise DataFormatError(f"{where}: tensor of size {ref.size} at offset {ref.offset} runs past its "
                              f"storage {ref.storage.key} of {flat.size} elements")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:] if count else flat[:0], shape=ref.size,
                                           strides=tuple(s * item for s in ref.stride), writeable=False)
    array = np.array(view, copy=True)
    if ref.storage.type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _materialise(obj: Any, storages: Callable[[StorageRef], np.ndarray], where: str) -> Any:
    """Replace every TensorRef inside dicts/lists/tuples by its array (keys named in errors)."""
    if isinstance(obj, TensorRef):
        return _as_array(obj, storages, where)
    if isinstance(obj, dict):
        return OrderedDict((k, _materialise(v, storages, f"{where}: {k}")) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages, f"{where}[{i}]") for i, v in enumerate(obj))
    return obj


def _storage_array(raw: bytes, ref: StorageRef, where: str) -> np.ndarray:
    dtype = ref.type.dtype
    if len(raw) % dtype.itemsize or (ref.numel is not None and len(raw) // dtype.itemsize < ref.numel):
        raise DataFormatError(f"{where}: storage {ref.key} holds {len(raw)} bytes, not {ref.numel} "
                              f"{ref.type.name} elements")
    return np.frombuffer(raw, dtype=dtype)


def _read_zip(path: Path, archive: zipfile.ZipFile) -> Any:
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise DataFormatError(f"{path}: not a PyTorch zip checkpoint (expected one */data.pkl, found {len(pickles)})")
    root = pickles[0][: -len("data.pkl")]
    byteorder = f"{root}byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
        raise DataFormatError(f"{path}: {byteorder} is {archive.read(byteorder)[:16]!r}; only little-endian is read")
    obj = _unpickle(archive.read(pickles[0]), f"{path}: {pickles[0]}")
    cache: dict[str, np.ndarray] = {}

    def storage(ref: StorageRef) -> np.ndarray:
        if ref.key not in cache:
            name = f"{root}data/{ref.key}"
            try:
                raw = archive.read(name)
            except KeyError:
                raise DataFormatError(f"{path}: storage {name} is missing from the archive") from None
            cache[ref.key] = _storage_array(raw, ref, f"{path}: {name}")
        return cache[ref.key]

    return _materialise(obj, storage, str(path))


def _read_legacy(path: Path, stream: io.BufferedIOBase) -> Any:
    where = f"{path} (legacy torch format)"
    magic = _unpickle(stream, where)
    if magic != LEGACY_MAGIC:
        raise DataFormatError(f"{path}: neither a PyTorch zip archive nor a legacy torch.save stream")
    protocol = _unpickle(stream, where)
    if protocol != LEGACY_PROTOCOL:
        raise DataFormatError(f"{path}: legacy torch protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
    info = _unpickle(stream, where)
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise DataFormatError(f"{path}: big-endian legacy file; only little-endian is read")
    refs: dict[str, StorageRef] = {}

    class LegacyUnpickler(_RestrictedUnpickler):
        def persistent_load(self, pid: Any) -> StorageRef:
            ref = super().persistent_load(pid)
            if len(pid) > 5 and pid[5] is not None:
                raise DataFormatError(f"{where}: storage views are not supported (storage {ref.key})")
            refs.setdefault(ref.key, ref)
            return ref

    try:
        obj = LegacyUnpickler(stream, where).load()
    except DataFormatError:
        raise
    except Exception as err:
        raise DataFormatError(f"{where}: unreadable pickle ({type(err).__name__}: {err})") from None
    keys = _unpickle(stream, where)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DataFormatError(f"{where}: malformed storage key list")
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in refs:
            raise DataFormatError(f"{where}: storage {key} is listed but no tensor uses it")
        header = stream.read(8)
        if len(header) != 8:
            raise DataFormatError(f"{where}: file ends before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * refs[key].type.dtype.itemsize
        if numel < 0 or nbytes > os.path.getsize(path):
            raise DataFormatError(f"{where}: storage {key} claims {numel} elements, more than the file holds")
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise DataFormatError(f"{where}: file ends inside storage {key}")
        arrays[key] = _storage_array(raw, refs[key], f"{where}: storage {key}")

    def storage(ref: StorageRef) -> np.ndarray:
        if ref.key not in arrays:
            raise DataFormatError(f"{where}: storage {ref.key} is not in the file")
        return arrays[ref.key]

    return _materialise(obj, storage, str(path))


def read_torch_file(path: str | os.PathLike) -> Any:
    """The object a `torch.save` file holds, tensors as NumPy arrays; refuses anything but tensor containers."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive)
        except zipfile.BadZipFile as err:
            raise DataFormatError(f"{path}: corrupt zip archive ({err})") from None
    with open(path, "rb") as stream:
        return _read_legacy(path, stream)


def read_state_dict(path: str | os.PathLike) -> "OrderedDict[str, np.ndarray]":
    """The tensor state dict in a `.pth`: the file's dict itself, or its `state_dict_backbone`/`state_dict`
    entry (arcface_torch training checkpoints); a DistributedDataParallel `module.` prefix is removed."""
    obj = read_torch_file(path)
    if isinstance(obj, dict):
        for wrapper in ("state_dict_backbone", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise DataFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise DataFormatError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state
