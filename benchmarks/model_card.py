"""Write models/MODEL_CARD.md from the shipped model's metadata and the measured Kodak evaluations.

    .venv/bin/python benchmarks/model_card.py   # after `raq eval ... --json benchmarks/results/kodak_eval_*.json`
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "raq-default.pt"
RESULTS = ROOT / "benchmarks" / "results"


def table(path: Path) -> str:
    doc = json.loads(path.read_text())
    lines = ["| eK | bpp (whole file) | raw bpp | PSNR dB | MS-SSIM dB | perplexity | usage | coded bits/index |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {r['codebook_size']} | {r['bpp']:.4f} | {r['raw_bpp']:.4f} | {r['psnr']:.2f} | "
                     f"{r['ms_ssim']:.2f} | {r['perplexity']:.1f} | {r['usage']:.1f} | {r['bits_per_index']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    payload = torch.load(MODEL, map_location="cpu", weights_only=True)
    meta, cfg = payload["metadata"], payload["config"]
    n_params = sum(t.numel() for t in payload["state_dict"].values())
    hours = meta["train_seconds"] / 3600
    last_val = meta["validation"][-1] if meta.get("validation") else None
    parts = [
        "# Model card: raq-default", "",
        "The model `raq` uses when no `--model` is given. Regenerate this card with "
        "`.venv/bin/python benchmarks/model_card.py`; reproduce the model with `bin/train-default-model`.", "",
        "## Architecture", "",
        f"- Backbone `{cfg['backbone']}`: stride f={cfg['downsample']}, C={cfg['channels']} channels, "
        f"latent d={cfg['latent_dim']} split into G={cfg['groups']} product-quantisation groups of {cfg['latent_dim'] // cfg['groups']} dims.",
        f"- Base codebooks: G x K = {cfg['groups']} x {cfg['base_codebook_size']} (EMA, dead-code restarts).",
        f"- Data-driven RAQ generator: 2-layer LSTM Seq2Seq, hidden {cfg['generator_hidden']}, conditioned on eK: "
        f"{cfg['condition_on_size']}; eK range {cfg['min_codebook_size']}..{cfg['max_codebook_size']}.",
        f"- Raw rate: G*log2(eK)/f^2 bits per pixel; parameters: {n_params:,} (float32).", "",
        "## Training", "",
        f"- Data: {', '.join(Path(d).name if Path(d).name not in ('train', 'test') else 'bsds500/' + Path(d).name for d in meta['data'])} "
        f"(BSDS500 train + test, 400 photos); validation on bsds500/val (32 central 256x256 crops).",
        f"- {meta['steps']:,} steps, batch {meta['batch']} random {meta['crop']}x{meta['crop']} crops with flips, Adam with "
        f"learning rate {', '.join(f'{lr:g} from step {start}' for start, lr in meta.get('lr_schedule', [[0, meta['lr']]]))}, "
        f"eK per step {meta['codebook_size_sampling']}; {hours:.2f} h wall-clock on 2 CPU cores; seed {meta['seed']}; "
        f"code commit {meta['git_commit'][:12]}.",
    ]
    parts.append("- The coverage term of the generated codebooks (`coverage_weight`) was switched on at step 1,104 of this "
                 "run; `bin/train-default-model` uses it from the start.")
    if last_val:
        parts.append(f"- Last validation (step {last_val['step']}), PSNR dB by eK: {last_val['psnr']}.")
    for name, title in (("kodak_eval_data.json", "Kodak, data-driven RAQ (the codec's codebooks)"),
                        ("kodak_eval_model.json", "Kodak, model-based RAQ (DKM/IKM of the base codebooks)")):
        path = RESULTS / name
        if path.exists():
            parts += ["", f"## {title}", "", "Measured with `.venv/bin/raq eval ../shared/data/kodak "
                      f"--method {'data' if 'data' in name else 'model'} --json benchmarks/results/{name}` "
                      "(24 images, mean per image; bpp counts the whole .raq file; perplexity and usage over the whole set, "
                      "mean of the 4 groups).", "", table(path)]
    (ROOT / "models" / "MODEL_CARD.md").write_text("\n".join(parts) + "\n")
    print((ROOT / "models" / "MODEL_CARD.md").read_text())


if __name__ == "__main__":
    main()
