"""Data-driven RAQ: the Seq2Seq codebook generator G_psi(e, eK) -> adapted codebook (eK rows).

    e (G, K, dg) --in_proj--> encoder LSTM --(h, c)--> decoder LSTM, eK steps --out_proj--> e~ (G, eK, dg)
                                                         ^ inputs: cross-forcing schedule + size embedding

The G groups' codebooks are read as a batch of G sequences by one shared network.

Choices where the paper and its reference code disagree (see ../shared/method/raq-method.md, section 3.2):

* Cross-forcing follows the reference CODE, not the paper. Decoder input at step t (0-indexed) is
  P[0] for t=0; for t>=1 it is the original codeword e[(t-1)/2] when t-1 is even and (t-1)/2 < K, else the
  learned position embedding P[t-1]. The paper instead feeds back the previously generated codeword in the
  "free-running" slots. With the code's rule every decoder input is known before the loop starts, so the whole
  sequence runs as ONE fused nn.LSTM call (thousands of times faster on a CPU than a Python loop of single steps,
  which the feedback rule forces).
* Unlike both paper and code, the generator is CONDITIONED ON eK: a learned embedding of log2(eK) is added to
  every decoder input. The reference generator ignores eK, so each codebook is a prefix of one list; here each
  size gets its own codebook. `condition_on_size=False` restores the size-blind (prefix) behaviour as an ablation.
* `cross_forcing=False` feeds only position embeddings (the paper's ablation without cross-forcing).
* An output projection (hidden -> dg) is added: codewords are not confined to the LSTM's (-1, 1) range, and
  the LSTM width is independent of the codeword dimension.
"""
from __future__ import annotations

import torch
from torch import nn

from raqcodec.models.config import ModelConfig


class CodebookGenerator(nn.Module):
    """Seq2Seq LSTM mapping base codebooks (G, K, dg) to adapted codebooks (G, eK, dg), any eK in range."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hid, layers, p = cfg.generator_hidden, cfg.generator_layers, cfg.generator_dropout
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.group_dim, hid)
        self.input_dropout = nn.Dropout(p)
        self.encoder = nn.LSTM(hid, hid, num_layers=layers, dropout=p if layers > 1 else 0.0)
        self.decoder = nn.LSTM(hid, hid, num_layers=layers, dropout=p if layers > 1 else 0.0)
        self.positions = nn.Embedding(cfg.max_codebook_size, hid)  # P: inputs of the free-running slots
        self.size_embed = nn.Sequential(nn.Linear(1, hid), nn.Tanh(), nn.Linear(hid, hid))
        self.out_proj = nn.Linear(hid, cfg.group_dim)

    def _size_feature(self, size: int, device: torch.device) -> torch.Tensor:
        """cfg.size_feature(size) as a (1, 1) tensor in the dtype of the generator's weights."""
        return torch.tensor([[self.cfg.size_feature(size)]], dtype=self.size_embed[0].weight.dtype, device=device)

    def _decoder_inputs(self, base_in: torch.Tensor, size: int) -> torch.Tensor:
        """Cross-forcing inputs (eK, G, hid) from projected base codewords base_in (K, G, hid)."""
        k, device = base_in.shape[0], base_in.device
        t = torch.arange(size, device=device)
        prev = t - 1
        use_code = (t >= 1) & (prev % 2 == 0) & (prev // 2 < k) & self.cfg.cross_forcing
        code_rows = (prev // 2).clamp(0, k - 1)
        pos_rows = prev.clamp(min=0)
        from_codes = base_in[code_rows]  # (eK, G, hid)
        from_positions = self.positions(pos_rows).unsqueeze(1).expand_as(from_codes)
        inputs = torch.where(use_code.view(-1, 1, 1), from_codes, from_positions)
        if self.cfg.condition_on_size:
            inputs = inputs + self.size_embed(self._size_feature(size, device)).unsqueeze(0)
        return inputs

    def forward(self, base: torch.Tensor, size: int) -> torch.Tensor:
        """base (G, K, dg) -> adapted codebook (G, size, dg)."""
        if not self.cfg.min_codebook_size <= size <= self.cfg.max_codebook_size:
            raise ValueError(f"codebook size {size} outside [{self.cfg.min_codebook_size}, {self.cfg.max_codebook_size}]")
        base_in = self.in_proj(base).transpose(0, 1)  # (K, G, hid)
        _, state = self.encoder(self.input_dropout(base_in))
        out, _ = self.decoder(self.input_dropout(self._decoder_inputs(base_in, size)), state)
        return self.out_proj(out).transpose(0, 1).contiguous()  # (G, size, dg)
