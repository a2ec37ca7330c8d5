"""Model-based RAQ: re-size a trained codebook without training anything new.

eK < K: differentiable k-means (DKM) clusters the K codewords into eK soft centroids.
eK > K: inverse k-means (IKM) fits eK codewords whose DKM clustering back to K centroids matches the base
codebook under an MMD loss.

Deviations from the reference code, on purpose (method notes, section 4): DKM starts from a seeded random
subset of all K rows (the paper's description; the code took the first eK rows); IKM starts from base
codewords plus small noise instead of N(0, d^-1/2) (the paper reports strong sensitivity to the init), and
runs far fewer iterations (`ikm_steps` 100 instead of 5000, each with 10 inner DKM iterations instead of 200)
so that a CPU can afford it: eK=4096 for four 256-row groups then takes minutes, not hours.
"""
from __future__ import annotations

import torch

DKM_TEMPERATURE = 0.01


def dkm(points: torch.Tensor, k: int, *, iterations: int = 200, temperature: float = DKM_TEMPERATURE,
        init: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Differentiable k-means: points (N, d) -> k soft centroids (k, d).

    Assignment weights are softmax(-||w_i - c_j|| / temperature) over centroids (Euclidean, not squared).
    """
    if init is None:
        gen = torch.Generator().manual_seed(seed)
        init = points[torch.randperm(points.shape[0], generator=gen)[:k].to(points.device)]
    centroids = init
    for _ in range(iterations):
        weights = torch.softmax(-torch.cdist(points, centroids) / temperature, dim=1)  # (N, k)
        new = weights.transpose(0, 1) @ points / weights.sum(0).unsqueeze(1).clamp_min(1e-12)
        if torch.mean(torch.abs(new - centroids)) < 1e-8:
            centroids = new
            break
        centroids = new
    return centroids


def _mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Squared maximum mean discrepancy with a Gaussian kernel between point sets x (n, d) and y (m, d)."""
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2)).mean()

    return kernel(x, x) + kernel(y, y) - 2 * kernel(x, y)


def ikm(base: torch.Tensor, size: int, *, steps: int = 100, dkm_iterations: int = 10, lr: float = 5e-3,
        seed: int = 0) -> torch.Tensor:
    """Inverse k-means: base (K, d) -> size > K codewords (size, d) whose DKM down to K matches base (MMD)."""
    k, d = base.shape
    gen = torch.Generator().manual_seed(seed)
    spread = base.std(0, keepdim=True)
    start = base[torch.randint(0, k, (size,), generator=gen)] + 0.1 * spread * torch.randn(size, d, generator=gen)
    codewords = start.clone().requires_grad_(True)
    opt = torch.optim.AdamW([codewords], lr=lr, weight_decay=0.01 if size <= 1000 else 0.05)
    bandwidth = float(torch.cdist(base, base).median().clamp_min(1e-6))
    best, best_loss = start.clone(), float("inf")
    for _ in range(steps):
        centroids = dkm(codewords, k, iterations=dkm_iterations, init=codewords[:k])
        loss = _mmd(centroids, base, bandwidth)
        if loss.item() < best_loss:
            best_loss, best = loss.item(), codewords.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return best


@torch.no_grad()
def _dkm_no_grad(points: torch.Tensor, k: int) -> torch.Tensor:
    return dkm(points, k)


def resize_codebook(base: torch.Tensor, size: int, *, ikm_steps: int = 100) -> torch.Tensor:
    """Model-based RAQ for product codebooks: base (G, K, dg) -> (G, size, dg), group by group."""
    k = base.shape[1]
    if size == k:
        return base.clone()
    groups = []
    for g in range(base.shape[0]):
        if size < k:
            groups.append(_dkm_no_grad(base[g], size))
        else:
            groups.append(ikm(base[g].detach(), size, steps=ikm_steps))
    return torch.stack(groups)
