"""Model configurations: one frozen dataclass, and the named configurations the project uses."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a RAQ-VAE from a state dict.

    Rates: an image of H x W pixels has ceil(H/f) * ceil(W/f) latent positions, each holding `groups`
    indices into an adapted codebook of eK rows per quantisation stage used, so the raw rate is
    sum over stages of groups * log2(eK_s) / f**2 bits per pixel.

    Stages: stage 1 quantises the latent z; stage s > 1 quantises the residual z - (q_1 + ... + q_{s-1}).
    Every stage has its own base codebooks and its own RAQ generator, so each stage's codebook size is a rate
    knob of its own, and any prefix of stages decodes.
    """

    backbone: str = "gdn"  # "paper" (stride-4 conv + 2 ResBlocks, as RAQ-VAE) or "gdn" (CompressAI-style GDN stack)
    downsample: int = 8  # f: latent grid is (H/f, W/f)
    channels: int = 128  # C: hidden channels of the transforms
    latent_dim: int = 64  # d: channels of the latent, split into `groups` sub-vectors of latent_dim // groups
    groups: int = 4  # product-quantisation groups per latent position (1 = plain VQ-VAE)
    base_codebook_size: int = 256  # K: rows of each base (EMA-trained) codebook
    min_codebook_size: int = 16  # smallest eK the generator is trained for and the codec accepts
    max_codebook_size: int = 4096  # largest eK (size of the generator's position table)
    generator_hidden: int = 64  # LSTM width of the Seq2Seq codebook generator
    generator_layers: int = 2
    generator_dropout: float = 0.1
    condition_on_size: bool = True  # False: the reference code's size-blind generator (codebooks are prefixes)
    cross_forcing: bool = True  # False: decoder inputs are position embeddings only (the paper's "no CF" ablation)
    adaptive: bool = True  # False: train the base branch alone (a fixed-rate VQ-VAE baseline)
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03  # EMA usage below which a base code is restarted from an encoder output
    coverage_weight: float = 0.25  # weight of the generated-codebook coverage term (0: the paper's loss)
    stages: int = 1  # residual quantisation stages (1: plain product VQ, as the RAQ paper)
    size_feature_lo: int = 0  # eK at which the generator's log2-size feature is 0 (0: min_codebook_size)

    @property
    def group_dim(self) -> int:
        """Dimension of one codeword (d / groups)."""
        return self.latent_dim // self.groups

    def size_feature(self, size: int) -> float:
        """The RAQ generator's input for eK = size: log2(eK) scaled to [0, 1] from size_feature_lo (default: the
        smallest eK) to the largest eK."""
        import math

        lo = math.log2(self.size_feature_lo or self.min_codebook_size)
        hi = math.log2(self.max_codebook_size)
        return (math.log2(size) - lo) / max(hi - lo, 1e-9)

    def raw_bpp(self, codebook_size: int | tuple[int, ...]) -> float:
        """Fixed-length rate in bits per pixel for codebook size eK, or one eK per stage (no entropy coding)."""
        import math

        sizes = (codebook_size,) if isinstance(codebook_size, int) else codebook_size
        return sum(self.groups * math.log2(size) / self.downsample**2 for size in sizes)

    def ladder(self, sizes: Iterable[int] | None = None) -> list[tuple[int, ...]]:
        """Settings (one eK per stage used) in order of rate: stage 1 alone at each eK of `sizes` (default: every
        eK min..max), then each further stage at each of them with the earlier stages at the largest eK."""
        sizes = list(range(self.min_codebook_size, self.max_codebook_size + 1) if sizes is None else sizes)
        return [(self.max_codebook_size,) * stage + (size,) for stage in range(self.stages) for size in sizes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(**data)


CONFIGS: dict[str, ModelConfig] = {
    # The RAQ paper's VQ-VAE (CIFAR-10 / CelebA setting): f=4, C=128, d=64, one codebook.
    "paper": ModelConfig(backbone="paper", downsample=4, channels=128, latent_dim=64, groups=1,
                         base_codebook_size=128, min_codebook_size=16, max_codebook_size=1024,
                         generator_dropout=0.5),
    # The first shipped model (format-1 files, models before 2026-11-26): one stage, eK 16..4096.
    "default-v1": ModelConfig(),
    # The shipped natural-image model: GDN transforms at f=8, four product-quantised codebooks per stage, two
    # residual stages, eK 2..4096 per stage. The size feature keeps default-v1's scale (0 at eK=16) so that
    # default-v1 weights continue training in it (`raq train --init`).
    "default": ModelConfig(stages=2, min_codebook_size=2, size_feature_lo=16),
    # A tiny model for tests: trains in seconds.
    "tiny": ModelConfig(backbone="gdn", downsample=4, channels=16, latent_dim=8, groups=2,
                        base_codebook_size=32, min_codebook_size=2, max_codebook_size=4096,
                        generator_hidden=16),
}


def named_config(name: str, **overrides: Any) -> ModelConfig:
    """A named configuration with some fields replaced."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)
