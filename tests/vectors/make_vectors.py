"""Regenerate the format test vectors (run only when the format version is raised on purpose).

    .venv/bin/python tests/vectors/make_vectors.py

Writes tests/vectors/: tiny-model.pt (a small fixed model), NAME.raq, NAME.png (its decoded image) and
vectors.json with the SHA-256 of each file's decoded indices, decoded pixels (raw RGB/L bytes) and PNG.
"""
from __future__ import annotations

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

CASES = {"rgb-33x20-ek16": ((20, 33), 16, False), "rgb-64x48-ek300": ((48, 64), 300, False),
         "grey-17x31-ek4096": ((31, 17), 4096, True)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(4):
            Image.fromarray(synthetic_image(64, 64, seed=i)).save(Path(tmp) / f"{i}.png")
        train(TrainOptions(sources=[tmp], out=str(HERE / "tiny-model.pt"), config="tiny", steps=30, batch=4,
                           crop=32, lr=2e-3, seed=0, checkpoint_minutes=60))
    (HERE / "tiny-model.ckpt").unlink()
    model = load_model(HERE / "tiny-model.pt")
    record = {}
    for name, ((h, w), size, grey) in CASES.items():
        pixels = synthetic_image(h, w, seed=h * w)
        enc = encode(pixels[:, :, 0] if grey else pixels, codebook_size=size, model=model)
        (HERE / f"{name}.raq").write_bytes(enc.data)
        image = decompress(enc.data, model=model)
        image.save(HERE / f"{name}.png")
        header, payload = bitstream.unpack(enc.data)
        indices = entropy.decode_indices(payload, header.latent_shape, size, header.entropy_model)
        record[name] = {"indices_sha256": sha256(indices.astype("<i4").tobytes()),
                        "pixels_sha256": sha256(np.asarray(image).tobytes()),
                        "png_sha256": sha256((HERE / f"{name}.png").read_bytes()),
                        "format_version": bitstream.FORMAT_VERSION}
    (HERE / "vectors.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
