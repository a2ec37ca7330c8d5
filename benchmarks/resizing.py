"""Naive re-sizing of a fixed-rate model's codebook, shared by the baselines and the CIFAR-10 table scripts.

Codebooks are (G, K, dg) tensors: G product groups of K codewords of dimension dg. Each function picks `size`
codewords per group, independently per group.
"""
from __future__ import annotations

import numpy as np
import torch


def random_subset(base: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """(G, K, dg) -> (G, size, dg): a random subset of each group's codewords (one randperm per group, in order)."""
    return torch.stack([cb[torch.randperm(cb.shape[0], generator=generator)[:size]] for cb in base])


def topk_used(base: torch.Tensor, counts: np.ndarray, size: int) -> torch.Tensor:
    """(G, K, dg) and (G, K) usage counts -> (G, size, dg): each group's `size` most used codewords (ties: lower
    index first)."""
    order = np.argsort(-counts, axis=1, kind="stable")[:, :size]
    return torch.stack([cb[torch.from_numpy(order[g].copy())] for g, cb in enumerate(base)])
