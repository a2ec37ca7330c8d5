"""Regenerate format test vectors (only when a format version is added on purpose; old vectors stay).

    .venv/bin/python tests/vectors/make_vectors.py tiny-model-2stage.pt   # only that model's vectors
    .venv/bin/python tests/vectors/make_vectors.py context                # entropy model 2 vectors, no training

Writes tests/vectors/: MODEL (a small fixed model: tiny-model.pt, one stage, format version 1;
tiny-model-2stage.pt, two stages, format version 2), NAME.raq, NAME.png (its decoded image) and vectors.json
with, per file, its model and the SHA-256 of its decoded indices (every stage, in order), decoded pixels (raw
RGB/L bytes) and PNG.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import synthetic_image  # noqa: E402

from raqcodec import bitstream, entropy  # noqa: E402
from raqcodec.codec import decompress, encode  # noqa: E402
from raqcodec.modelfile import load_model  # noqa: E402
from raqcodec.train import TrainOptions, train  # noqa: E402

MODELS = {  # model file -> (config overrides, {vector name: ((height, width), setting, greyscale)})
    "tiny-model.pt": ({}, {"rgb-33x20-ek16": ((20, 33), (16,), False), "rgb-64x48-ek300": ((48, 64), (300,), False),
                           "grey-17x31-ek4096": ((31, 17), (4096,), True)}),
    "tiny-model-2stage.pt": ({"stages": 2}, {"v2-rgb-40x24-ek4096+12": ((24, 40), (4096, 12), False),
                                             "v2-grey-9x70-ek100+4096": ((70, 9), (100, 4096), True)}),
}


# Entropy model 2 (context) vectors, coded with the existing 2-stage model: name -> ((height, width), setting)
CONTEXT_VECTORS = {"v2-rgb-72x56-ek64-context": ((56, 72), (64,)),
                   "v2-rgb-40x64-ek300+1500-context": ((64, 40), (300, 1500))}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make(model_name: str, record: dict) -> None:
    overrides, cases = MODELS[model_name]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(4):
            Image.fromarray(synthetic_image(64, 64, seed=i)).save(Path(tmp) / f"{i}.png")
        train(TrainOptions(sources=[tmp], out=str(HERE / model_name), config="tiny", steps=30, batch=4,
                           crop=32, lr=2e-3, seed=0, checkpoint_minutes=60, config_overrides=overrides))
    (HERE / model_name).with_suffix(".ckpt").unlink()
    model = load_model(HERE / model_name)
    for name, ((h, w), setting, grey) in cases.items():
        pixels = synthetic_image(h, w, seed=h * w)
        enc = encode(pixels[:, :, 0] if grey else pixels, codebook_size=setting, model=model)
        (HERE / f"{name}.raq").write_bytes(enc.data)
        image = decompress(enc.data, model=model)
        image.save(HERE / f"{name}.png")
        record[name] = describe(name, model_name, enc.data, setting, image)


def describe(name: str, model_name: str, data: bytes, setting: tuple[int, ...], image: Image.Image) -> dict:
    """The vectors.json record of a written vector NAME.raq / NAME.png."""
    header, payload = bitstream.unpack(data)
    grids = entropy.decode_stages(payload, header.latent_shape, list(setting), header.entropy_model)
    return {"model": model_name,
            "indices_sha256": sha256(b"".join(g.astype("<i4").tobytes() for g in grids)),
            "pixels_sha256": sha256(np.asarray(image).tobytes()),
            "png_sha256": sha256((HERE / f"{name}.png").read_bytes()),
            "format_version": header.version}


def make_context(record: dict) -> None:
    """Entropy model 2 vectors: the existing 2-stage model's nearest-codeword indices, coded with CONTEXT."""
    model_name = "tiny-model-2stage.pt"
    model = load_model(HERE / model_name)
    for name, ((h, w), setting) in CONTEXT_VECTORS.items():
        enc = encode(synthetic_image(h, w, seed=h + w), codebook_size=setting, model=model)
        payload = entropy.encode_stages(enc.indices, list(setting), entropy.CONTEXT)
        header = dataclasses.replace(enc.header, entropy_model=entropy.CONTEXT, payload_length=len(payload))
        data = bitstream.pack(header, payload)
        (HERE / f"{name}.raq").write_bytes(data)
        image = decompress(data, model=model)
        image.save(HERE / f"{name}.png")
        record[name] = describe(name, model_name, data, setting, image)


def main() -> None:
    path = HERE / "vectors.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    for model_name in sys.argv[1:] or [*MODELS, "context"]:
        if model_name == "context":
            make_context(record)
        else:
            make(model_name, record)
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
