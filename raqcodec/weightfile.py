"""Model files without torch: their format constants, checks and fingerprint, and a reader of the zip format
of torch.save with numpy alone, for the decoder that runs without torch (modelfile.py writes and loads model
files with torch and shares the first three).

torch.save writes a zip archive: <name>/data.pkl, a pickle of the saved object in which every tensor is a call
torch._utils._rebuild_tensor_v2(storage, offset, shape, strides, requires_grad, hooks) and every storage a
persistent id ("storage", torch.<Type>Storage, key, location, numel) whose bytes are <name>/data/<key>, in the
byte order named by <name>/byteorder. The unpickler below allows only those globals (and OrderedDict), so, as
torch.load(weights_only=True), a model file cannot run code; tensors come back as numpy arrays.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from raqcodec.errors import CodecError

MODEL_FORMAT = "raqcodec-model"
MODEL_FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "raq-default.pt"


def check_model_payload(payload: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The dict a model file holds, {"format", "version", "config", "state_dict", "metadata"}; CodecError when
    it is not a raqcodec model or of another version."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CodecError(f"not a raqcodec model file: {path}")
    if payload.get("version") != MODEL_FORMAT_VERSION:
        raise CodecError(f"model file version {payload.get('version')} is not supported: {path}")
    return payload


def state_fingerprint(tensors: Iterable[tuple[str, tuple[int, ...], str, np.ndarray]]) -> bytes:
    """8-byte SHA-256 prefix of a state dict given as (name, shape, torch dtype name, values): every tensor,
    sorted by name, with its shape and dtype (modelfile.fingerprint says why)."""
    h = hashlib.sha256()
    for name, shape, dtype, values in sorted(tensors, key=lambda item: item[0]):
        h.update(f"{name}:{tuple(shape)}:{dtype}".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.digest()[:8]


# torch storage class -> (numpy dtype, the torch dtype's name as str(tensor.dtype) gives it)
STORAGE_TYPES = {
    "FloatStorage": (np.float32, "torch.float32"), "DoubleStorage": (np.float64, "torch.float64"),
    "HalfStorage": (np.float16, "torch.float16"), "LongStorage": (np.int64, "torch.int64"),
    "IntStorage": (np.int32, "torch.int32"), "ShortStorage": (np.int16, "torch.int16"),
    "CharStorage": (np.int8, "torch.int8"), "ByteStorage": (np.uint8, "torch.uint8"),
    "BoolStorage": (np.bool_, "torch.bool"),
}


class WeightArray(np.ndarray):
    """A numpy array that remembers the torch dtype name it was saved with (`torch_dtype`), for fingerprints."""

    torch_dtype: str


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype, self.torch_dtype = STORAGE_TYPES[name]


def _rebuild_tensor(storage: tuple[np.ndarray, str], offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
                    _requires_grad: bool, _hooks: Any, _metadata: Any = None) -> WeightArray:
    flat, torch_dtype = storage
    size = int(np.prod(shape))
    if (offset < 0 or len(shape) != len(strides) or min((*shape, *strides), default=0) < 0
            or (size and offset + sum((n - 1) * s for n, s in zip(shape, strides)) >= flat.size)):
        raise CodecError("a tensor of the model file reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=shape,
                                           strides=[s * flat.itemsize for s in strides])
    array = np.array(view).view(WeightArray)  # a copy: writable, contiguous, no tie to the file's buffer
    array.torch_dtype = torch_dtype
    return array


class _WeightUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self.archive, self.prefix = archive, prefix
        self.byteorder = "<" if archive.read(f"{prefix}byteorder").strip() != b"big" else ">"
        self.storages: dict[str, tuple[np.ndarray, str]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_TYPES:
            return _StorageType(name)
        raise CodecError(f"the model file holds an object this reader does not load: {module}.{name}")

    def persistent_load(self, pid: Any) -> tuple[np.ndarray, str]:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CodecError("the model file holds a storage this reader does not load")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self.storages:
            data = np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"),
                                 dtype=np.dtype(storage_type.dtype).newbyteorder(self.byteorder))
            if data.size < numel:
                raise CodecError("a storage of the model file is shorter than its header says")
            self.storages[key] = (data.astype(storage_type.dtype, copy=False), storage_type.torch_dtype)
        return self.storages[key]


def read_weight_file(path: str | os.PathLike) -> dict[str, Any]:
    """The object a torch.save file holds, its tensors as numpy arrays (WeightArray); CodecError when the file
    is not such an archive or holds anything but tensors, containers and plain values."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if len(pickles) != 1:
                raise CodecError(f"not a raqcodec model file: {path}")
            return _WeightUnpickler(archive, pickles[0][:-len("data.pkl")]).load()
    except FileNotFoundError:
        raise CodecError(f"model file not found: {path}") from None
    except CodecError:
        raise
    except Exception as exc:  # zipfile, pickle and numpy raise many types for a file that is not a model
        raise CodecError(f"not a raqcodec model file: {path} ({type(exc).__name__})") from None
