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
    lines = ["| setting (eK per stage) | bpp (whole file) | raw bpp | PSNR dB | MS-SSIM dB | perplexity | usage | "
             "coded bits/index |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {r.get('setting', r['codebook_size'])} | {r['bpp']:.4f} | {r['raw_bpp']:.4f} | {r['psnr']:.2f} | "
                     f"{r['ms_ssim']:.2f} | {r['perplexity']:.1f} | {r['usage']:.1f} | {r['bits_per_index']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    payload = torch.load(MODEL, map_location="cpu", weights_only=True)
    meta, cfg = payload["metadata"], payload["config"]
    n_params = sum(t.numel() for t in payload["state_dict"].values())
    hours = meta["train_seconds"] / 3600
    last_val = meta["validation"][-1] if meta.get("validation") else None
    stages = cfg.get("stages", 1)
    parts = [
        "# Model card: raq-default", "",
        "The model `raq` uses when no `--model` is given. Regenerate this card with "
        "`.venv/bin/python benchmarks/model_card.py`; reproduce the model with `bin/train-default-model`.", "",
        "## Architecture", "",
        f"- Backbone `{cfg['backbone']}`: stride f={cfg['downsample']}, C={cfg['channels']} channels, "
        f"latent d={cfg['latent_dim']} split into G={cfg['groups']} product-quantisation groups of {cfg['latent_dim'] // cfg['groups']} dims.",
        f"- {stages} quantisation stage(s): stage 1 quantises the latent, stage s > 1 the residual the earlier stages "
        "left. Each stage has its own base codebooks and its own RAQ generator.",
        f"- Base codebooks per stage: G x K = {cfg['groups']} x {cfg['base_codebook_size']} (EMA, dead-code restarts).",
        f"- Data-driven RAQ generator per stage: 2-layer LSTM Seq2Seq, hidden {cfg['generator_hidden']}, conditioned on eK: "
        f"{cfg['condition_on_size']}; eK range {cfg['min_codebook_size']}..{cfg['max_codebook_size']} per stage.",
        "- Rate ladder (what `--bpp` searches): stage 1 alone at eK = "
        f"{cfg['min_codebook_size']}..{cfg['max_codebook_size']}, then stage 1 at {cfg['max_codebook_size']} plus stage 2 at "
        f"eK = {cfg['min_codebook_size']}..{cfg['max_codebook_size']}.",
        f"- Raw rate: sum over stages of G*log2(eK_s)/f^2 bits per pixel; parameters: {n_params:,} (float32), "
        f"file {MODEL.stat().st_size / 2**20:.1f} MiB.", "",
        "## Training", "",
        f"- {meta['steps']:,} steps in all, {hours:.2f} h of training wall-clock (CPU and GPU sittings together).",
        f"- Learning rate by sitting (first step, lr): {meta.get('lr_schedule')}; the last sitting decays by a cosine to "
        f"{meta.get('lr_end')}. eK per step {meta['codebook_size_sampling']}, drawn independently per stage; seed {meta['seed']}.",
    ]
    lineage = meta.get("lineage", [])
    if lineage:
        parts += ["", "| sitting | device | steps | minutes | crops | data | learning rate | code commit |",
                  "|---|---|---:|---:|---|---|---|---|"]
        for row in lineage:
            parts.append(f"| {row['what']} | {row['device']} | {row['steps']} | {row['minutes']} | {row['crops']} | "
                         f"{row['data']} | {row['lr']} | {row['commit']} |")
    if last_val:
        parts.append(f"\n- Last validation (step {last_val['step']}, central 256x256 crops of {meta.get('val')}), "
                     f"PSNR dB by setting: {last_val['psnr']}.")
    for name, title in (("kodak_eval_data.json", "Kodak, data-driven RAQ (the codec's codebooks)"),
                        ("kodak_eval_model.json", "Kodak, model-based RAQ (DKM/IKM of the base codebooks)")):
        path = RESULTS / name
        if path.exists():
            parts += ["", f"## {title}", "", "Measured with `.venv/bin/raq eval ../shared/data/kodak "
                      f"--method {'data' if 'data' in name else 'model'} --json benchmarks/results/{name}` "
                      "(24 images, mean per image; bpp counts the whole .raq file; perplexity and usage over the whole set, "
                      "of the setting's last stage, mean of the 4 groups).", "", table(path)]
    (ROOT / "models" / "MODEL_CARD.md").write_text("\n".join(parts) + "\n")
    print((ROOT / "models" / "MODEL_CARD.md").read_text())


if __name__ == "__main__":
    main()
