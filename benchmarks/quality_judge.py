"""How well rate control's quality judge (latent error) picks the option of best decoded quality (pixel PSNR).

    .venv/bin/python benchmarks/quality_judge.py FOLDER [--targets 0.1,0.3,0.5,0.9,1.2] [--limit N] [--json OUT]

Rate control (`raqcodec/ratecontrol.py`) judges its options in the latent: it keeps the file of lowest mean
squared error between z and the chosen codewords, without decoding. Here, per image and target, every option it
may consider is built as choose_setting builds them (the nearest-codeword ladder pick when it fits, and each
rate-aware candidate setting fitted to the target: all of them, where choose_setting stops at the first that
lands in the rate window), each is decoded, and among the options in the rate window (>= 0.9 x target; all
when none is) the latent judge's pick is compared with the pick of best pixel PSNR (an oracle that decodes).
Prints and writes JSON: per target, how often the two agree and the PSNR the latent judge loses (dB).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from raqcodec.codec import analyse_pixels, decompress, get_model, setting_label
from raqcodec.data import IMAGE_SUFFIXES
from raqcodec.image_io import load_image
from raqcodec.metrics import psnr
from raqcodec.ratecontrol import (RATE_WINDOW, RateAwareQuantizer, _nearest_pick, fit_rate_aware, latent_error,
                                  rate_aware_specs, search_ladder, size_scale)


def options(model, latent, bpp: float) -> list:
    """Every file choose_setting may compare at this target (ratecontrol.Draft, whole file <= bpp)."""
    base, pick = _nearest_pick(model, latent, bpp)
    if pick is not None and base == search_ladder(model)[-1]:
        return [pick]
    scale = size_scale(pick)
    found = [] if pick is None else [pick]
    cache: dict = {}
    for setting, strength in rate_aware_specs(model, base, pick):
        fitted = fit_rate_aware(RateAwareQuantizer(model, latent, setting, strength, cache), bpp, scale)
        if fitted is not None:
            found.append(fitted)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--targets", default="0.1,0.3,0.5,0.9,1.2")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/quality_judge.json")
    args = parser.parse_args()
    model = get_model(None)
    targets = [float(t) for t in args.targets.split(",")]
    paths = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
    rows = []
    for path in paths:
        pixels, color_mode = load_image(path)
        latent = analyse_pixels(model, pixels, color_mode)
        for bpp in targets:
            found = options(model, latent, bpp)
            in_window = [enc for enc in found if not enc.fits(RATE_WINDOW * bpp)] or found  # as choose_setting
            scored = [(latent_error(model, latent, enc.setting, enc.indices),
                       psnr(pixels, np.asarray(decompress(enc.write().data, model=model))), enc) for enc in in_window]
            by_latent = min(scored, key=lambda s: s[0])
            by_pixels = max(scored, key=lambda s: s[1])
            rows.append({"image": path.name, "target": bpp, "options": len(scored),
                         "latent_pick": setting_label(by_latent[2].setting), "latent_pick_psnr": by_latent[1],
                         "pixel_pick": setting_label(by_pixels[2].setting), "pixel_pick_psnr": by_pixels[1],
                         "agree": by_latent[2] is by_pixels[2], "psnr_lost_db": by_pixels[1] - by_latent[1]})
            print(json.dumps(rows[-1]))
    summary = {}
    for bpp in targets:
        sel = [r for r in rows if r["target"] == bpp]
        choices = [r for r in sel if r["options"] > 1]
        summary[str(bpp)] = {
            "images": len(sel), "with_a_choice": len(choices),
            "agree": sum(r["agree"] for r in choices),
            "mean_psnr_lost_db": statistics.mean(r["psnr_lost_db"] for r in sel),
            "max_psnr_lost_db": max(r["psnr_lost_db"] for r in sel)}
    print(json.dumps(summary, indent=1))
    Path(args.json).write_text(json.dumps({"folder": args.folder, "summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
