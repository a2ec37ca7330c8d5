"""How fast `--bpp` compression could be at best: the seconds any rate search must spend to write the files rate
control writes, against what it spends, per megapixel, model loaded, codebooks cached.

    .venv/bin/python benchmarks/encode_floor.py ../shared/data/kodak --json benchmarks/results/encode_floor.json

For every image and target (bits per pixel) it times, best of --repeats runs each:
- analysis: loading the image file and computing its latent (`codec.analyse`), which every encode pays;
- rate control: `ratecontrol.choose_setting` on that latent, to the whole file;
- floor: writing ONE file at the setting rate control chose, with one pass of its quantiser: the nearest
  candidates of every stage, the earlier stages at PREFIX_STRENGTH, one entropy-constrained choice in the
  last stage (strength 1), the coder's plan and the range coder (`RateAwareQuantizer(...).draft(1.0).write()`).
  Any search that ends with a rate-aware file at that setting pays at least this, whatever it searches; the
  nearest-codeword file of the same setting (`codec.encode_latent`) is timed too, as the floor of coding
  without rate-aware choice.
Prints JSON (also written to --json): per target, mean seconds per megapixel of each part, analysis + rate
control (what `raq compress --bpp` costs with the model loaded) and analysis + floor, and how many images'
analysis + floor is under --budget s/MP. The process keeps freed memory as `raq` does.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import raqcodec
from raqcodec.codec import analyse, encode_latent, get_model, setting_label
from raqcodec.data import list_images
from raqcodec.ratecontrol import PREFIX_STRENGTH, RateAwareQuantizer, choose_setting

TARGETS = (0.1, 0.3, 0.5, 1.2)


def best_time(fn, repeats: int):
    """(fn's last result, its fastest wall time in seconds over `repeats` calls)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="folders or image files")
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="bits per pixel, comma-separated")
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each timed part; the fastest counts")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per megapixel to compare with")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/encode_floor.json")
    args = parser.parse_args()
    raqcodec.keep_freed_memory()  # as `raq` does
    model = get_model(args.model, "cpu")
    paths = [p for item in map(Path, args.inputs) for p in (list_images(item) if item.is_dir() else [item])][: args.limit]
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    with torch.no_grad():
        for target in targets:
            choose_setting(model, analyse(model, paths[0]), target)  # warm-up: codebooks generated and cached
            per_image = []
            for path in paths:
                latent, t_analysis = best_time(lambda: analyse(model, path), args.repeats)
                encoded, t_rate = best_time(lambda: choose_setting(model, latent, target), args.repeats)
                setting = encoded.setting
                strength = PREFIX_STRENGTH if len(setting) > 1 else 0.0
                _, t_floor = best_time(lambda: RateAwareQuantizer(model, latent, setting, strength).draft(1.0).write(),
                                       args.repeats)
                _, t_nearest = best_time(lambda: encode_latent(model, latent, setting), args.repeats)
                megapixels = latent.width * latent.height / 1e6
                per_image.append({"image": path.name, "megapixels": megapixels, "setting": setting_label(setting),
                                  "bpp": encoded.bpp, "analysis_s": t_analysis, "rate_control_s": t_rate,
                                  "floor_s": t_floor, "nearest_s": t_nearest})
            megapixels = sum(r["megapixels"] for r in per_image)

            def per_mp(*keys: str) -> float:
                return sum(sum(r[k] for k in keys) for r in per_image) / megapixels

            rows.append({"bpp": target, "images": len(per_image),
                         "analysis_s_per_mp": per_mp("analysis_s"),
                         "rate_control_s_per_mp": per_mp("rate_control_s"),
                         "floor_s_per_mp": per_mp("floor_s"),
                         "nearest_s_per_mp": per_mp("nearest_s"),
                         "compress_s_per_mp": per_mp("analysis_s", "rate_control_s"),
                         "compress_floor_s_per_mp": per_mp("analysis_s", "floor_s"),
                         "compress_nearest_s_per_mp": per_mp("analysis_s", "nearest_s"),
                         "images_floor_under_budget": sum(
                             (r["analysis_s"] + r["floor_s"]) / r["megapixels"] <= args.budget for r in per_image),
                         "settings": sorted({r["setting"] for r in per_image}),
                         "per_image": per_image})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_image"}))
    doc = {"device": f"cpu, {torch.get_num_threads()} threads", "torch": torch.__version__, "inputs": args.inputs,
           "repeats": args.repeats, "budget_s_per_mp": args.budget, "rows": rows,
           "mean_bpp": {str(r["bpp"]): float(np.mean([i["bpp"] for i in r["per_image"]])) for r in rows}}
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
