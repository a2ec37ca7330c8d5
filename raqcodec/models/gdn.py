"""GDN / IGDN and a two-conv residual block, with CompressAI's parameters and state_dict keys.

CompressAI 1.2.8 (whose layers these follow: Balle et al. 2016's GDN with CompressAI's non-negative
reparametrisation) costs about 3.7 s to import on the project's 2-core machine, because its package imports its
datasets (torch_geometric, torch._dynamo): that was most of a cold `raq decompress`. These modules compute the
same operations in the same order, so models trained with CompressAI's layers load and decode identically
(tests/test_models.py compares both when CompressAI is installed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBoundFunction(torch.autograd.Function):
    """max(x, bound), whose gradient passes where x >= bound or where it pushes x up (CompressAI's rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, bound = ctx.saved_tensors
        return ((x >= bound) | (grad_output < 0)) * grad_output, None


class LowerBound(nn.Module):
    """torch.max(x, bound) with the gradient of _LowerBoundFunction; the bound is a buffer of shape (1,)."""

    bound: torch.Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.Tensor([float(bound)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LowerBoundFunction.apply(x, self.bound)


class NonNegativeParametrizer(nn.Module):
    """Stores a non-negative parameter p as sqrt(p + pedestal); forward gives max(stored, bound)^2 - pedestal."""

    pedestal: torch.Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2 ** -18) -> None:
        super().__init__()
        self.register_buffer("pedestal", torch.Tensor([reparam_offset ** 2]))
        self.lower_bound = LowerBound((minimum + reparam_offset ** 2) ** 0.5)

    def init(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    """y_c = x_c / sqrt(beta_c + sum_j gamma_cj x_j^2) (inverse: x_c * sqrt(...)); x (B, C, H, W)."""

    def __init__(self, in_channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(in_channels)))
        self.gamma_reparam = NonNegativeParametrizer()
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(in_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        norm = F.conv2d(x ** 2, self.gamma_reparam(self.gamma).reshape(c, c, 1, 1), self.beta_reparam(self.beta))
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


class ResidualBlock(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU, plus the input; CompressAI's ResidualBlock(c, c)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.leaky_relu = nn.LeakyReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.leaky_relu(self.conv2(self.leaky_relu(self.conv1(x)))) + x
