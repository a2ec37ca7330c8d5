"""Payload bits per index by setting: the format-1 coder against the current writer, on the same indices.

    .venv/bin/python benchmarks/coder_bits.py ../shared/data/kodak --json benchmarks/results/coder_bits.json

Every image is analysed once and quantised to its nearest codewords at each setting; the indices are written
twice: with entropy models 0 and 1 only (format 1, the coder before entropy model 2) and with every model
(the writer's choice, context coding included). Reports payload bits per index (mean over the images of
payload bits / indices) and the relative change. Rate-aware indices (what --bpp writes) are measured by
benchmarks/rate_control.py. Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from raqcodec.codec import ENTROPY_MODELS, FORMAT_1_CODER, analyse, as_setting, encode_latent, get_model
from raqcodec.data import list_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--settings", default="4,16,64,256,1024,4096,4096+16,4096+256,4096+4096")
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default="benchmarks/results/coder_bits.json")
    args = parser.parse_args()
    model = get_model(args.model, "auto")
    settings = [as_setting(s) for s in args.settings.split(",")]
    bits: dict[str, dict[str, list[float]]] = {"+".join(map(str, s)): {"format1": [], "current": []} for s in settings}
    for path in list_images(args.folder):
        latent = analyse(model, path)
        cache: dict = {}
        for setting in settings:
            label = "+".join(map(str, setting))
            for name, models in (("format1", FORMAT_1_CODER), ("current", ENTROPY_MODELS)):
                enc = encode_latent(model, latent, setting, cache=cache, entropy_models=models)
                bits[label][name].append(8 * enc.header.payload_length / sum(g.size for g in enc.indices))
    rows = [{"setting": label, "format1_bits_per_index": float(np.mean(v["format1"])),
             "current_bits_per_index": float(np.mean(v["current"])),
             "change_percent": 100 * (float(np.mean(v["current"])) / float(np.mean(v["format1"])) - 1)}
            for label, v in bits.items()]
    doc = {"folder": str(args.folder), "indices": "nearest codewords", "rows": rows}
    print(json.dumps(doc, indent=1))
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
