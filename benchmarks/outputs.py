"""What the table benchmarks share: a PSNR plot against a rate knob, and writing JSON + Markdown + PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence


def plot_methods(rows: Sequence[dict], x_key: str, path: Path, *, xlabel: str, title: str, log2_x: bool = False,
                 dashed: Sequence[str] = ()) -> None:
    """Save a PNG of rows' "psnr" (dB) against rows' x_key, one line per "method" (in order of appearance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r[x_key], r["psnr"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method,
                linestyle="--" if method in dashed else "-")
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(doc: dict, table: str, out: Path, plot: Callable[[Path], None]) -> None:
    """out.json (doc), out.md (doc["budget"] then the Markdown table), out.png (plot), and the table on stdout."""
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(doc["budget"] + "\n\n" + table + "\n")
    plot(out.with_suffix(".png"))
    print(table)
