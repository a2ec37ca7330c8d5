"""Rate control and entropy-coding efficiency on an image folder (issue: the .raq codec).

    .venv/bin/python benchmarks/rate_control.py ../shared/data/kodak --targets 0.1,0.2,0.3,0.5,0.7,0.9,1.2

For every image: the whole-file bpp of the smallest and the largest setting of the rate ladder. For every image
and target bpp: the setting chosen, the whole-file bpp and its ratio to the target, the encode time. For every
encode: payload bits per index against log2(eK) and against the ideal code length under the coder's own
probabilities. Prints JSON (also written to --json) and a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from raqcodec import entropy
from raqcodec.codec import analyse, encode_latent, get_model, setting_label
from raqcodec.ratecontrol import choose_setting
from raqcodec.data import list_images
from raqcodec.errors import CodecError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--targets", default="0.1,0.2,0.3,0.5,0.7,0.9,1.2")
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/rate_control.json")
    args = parser.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    model = get_model(args.model, "auto")
    rows, ranges = [], {}
    ladder = model.cfg.ladder()
    for path in list_images(args.folder)[: args.limit]:
        latent = analyse(model, path)
        ranges[path.name] = {"smallest_bpp": encode_latent(model, latent, ladder[0]).bpp,
                             "largest_bpp": encode_latent(model, latent, ladder[-1]).bpp}
        for target in targets:
            row = {"image": path.name, "target": target}
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    start = time.perf_counter()
                    enc = choose_setting(model, latent, target)
                    seconds = time.perf_counter() - start
            except CodecError as exc:
                row.update(error=str(exc))
                rows.append(row)
                continue
            sizes = list(enc.setting)
            ideal = entropy.ideal_stage_bits(enc.indices, sizes, enc.header.entropy_model)
            payload_bits = enc.header.payload_length * 8
            n_index = sum(grid.size for grid in enc.indices)
            row.update(codebook_size=enc.header.codebook_size, setting=setting_label(enc.setting), bpp=enc.bpp,
                       search_seconds=seconds,
                       ratio=enc.bpp / target, capped=bool(caught), bits_per_index=payload_bits / n_index,
                       log2_ek=sum(math.log2(k) for k in sizes) / len(sizes), ideal_bits_per_index=ideal / n_index,
                       payload_over_ideal=payload_bits / ideal)
            rows.append(row)
            print(json.dumps(row))
    summary = {}
    for target in targets:
        ok = [r for r in rows if r["target"] == target and "bpp" in r]
        inside = [r for r in ok if not r["capped"]]
        summary[str(target)] = {
            "images": len([r for r in rows if r["target"] == target]), "encoded": len(ok),
            "capped_at_max_eK": len(ok) - len(inside), "below_min": len([r for r in rows if r["target"] == target and "error" in r]),
            "ratio_min": min((r["ratio"] for r in inside), default=None), "ratio_max": max((r["ratio"] for r in inside), default=None),
            "ratio_mean": float(np.mean([r["ratio"] for r in inside])) if inside else None,
            "all_within_0.9_1.0": all(0.9 <= r["ratio"] <= 1.0 for r in inside) if inside else None}
    coded = [r for r in rows if "bpp" in r]
    summary["payload_over_ideal_max"] = max(r["payload_over_ideal"] for r in coded)
    summary["smallest_setting"], summary["largest_setting"] = setting_label(ladder[0]), setting_label(ladder[-1])
    for key in ("smallest_bpp", "largest_bpp"):
        values = [r[key] for r in ranges.values()]
        summary[key] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
    Path(args.json).write_text(json.dumps({"summary": summary, "ranges": ranges, "rows": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print("| image | " + " | ".join(f"{t} bpp: eK / achieved" for t in targets) + " |")
    print("|---|" + "---|" * len(targets))
    for name in sorted({r["image"] for r in rows}):
        cells = []
        for t in targets:
            r = next(r for r in rows if r["image"] == name and r["target"] == t)
            cells.append(f"{r['setting']} / {r['bpp']:.4f}{' (max)' if r['capped'] else ''}" if "bpp" in r else "below min")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| image | smallest bpp | largest bpp |\n|---|---:|---:|")
    for name, r in ranges.items():
        print(f"| {name} | {r['smallest_bpp']:.4f} | {r['largest_bpp']:.4f} |")


if __name__ == "__main__":
    main()
