"""The mixed multi-path residual block (MMRB) of Hu et al., "Enhancing Quality of Pose-varied Face Restoration with
Local Weak Feature Sensing and GAN Prior" (journal Sec. III-B, Fig. 3, Eq. 4-10; preprint Sec. 3.2). Plug-and-play:
``(N, C, H, W)`` -> ``(N, C, H, W)`` for any ``C >= 2``.

    X_1, X_2 = Split(X_I)                                      (4)  the channels in two halves
    P_1  = s(W_1(X_1)),  P_2  = s(W_2(X_2))                    (5, 6)  3x3 and 5x5 convs, PReLU s
    P_1' = s(W_1(Concat[P_1, P_2])),  P_2' = s(W_2(Concat[P_1, P_2]))   (7, 8)
    P    = s(W_3(Concat[P_1', P_2']))                          (9)  1x1 bottleneck
    X_O  = X_I + P                                             (10)

Do Eq. (7)-(8) reuse the weights of Eq. (5)-(6)? The text says "W_1, W_2, W_3 indicate that the convolution kernel
size used in the convolution layer are 3, 5 and 1": W names the kernel size. And the weights cannot be the same
tensors: W_1 maps C/2 channels in Eq. (5) and the C channels of Concat[P_1, P_2] in Eq. (7). So bfrzoo reads them as
four convolutions of two kernel sizes (``share_weights=False``, the default; the layout of MSRN's multi-scale
residual block, Li et al. 2018, which the paper cites as its inspiration). ``share_weights=True`` is the literal
reading made possible: Eq. (7) applies the Eq. (5) kernel to each half of the concatenation and sums, i.e. one conv
over ``Concat[P_1, P_2]`` whose weight is ``[W_1 | W_1]`` (even ``C`` only).

Odd channel counts: the first half takes the extra channel (``ceil(C / 2)`` and ``floor(C / 2)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mmrb_parameter_count(channels: int, share_weights: bool = False) -> int:
    """The closed form of :class:`MMRB`'s parameter count (convs with bias, one PReLU slope per channel)."""
    c, c1, c2 = channels, (channels + 1) // 2, channels // 2
    first = (9 * c1 * c1 + c1) + (25 * c2 * c2 + c2)  # Eq. (5)-(6)
    second = 0 if share_weights else (9 * c * c1 + c1) + (25 * c * c2 + c2)  # Eq. (7)-(8)
    bottleneck = c * c + c  # Eq. (9)
    prelus = 3 * c  # after Eq. (5)-(6), after Eq. (7)-(8) (their own, even with shared kernels), after Eq. (9)
    return first + second + bottleneck + prelus


class MMRB(nn.Module):
    """Mixed multi-path residual block, Eq. (4)-(10) (see the module docstring). ``(N, C, H, W)`` -> same.

    Args:
        channels: ``C`` (>= 2; odd counts split ``ceil(C/2)`` + ``floor(C/2)``).
        share_weights: Eq. (7)-(8) reuse the Eq. (5)-(6) kernels (the literal reading; even ``C`` only).
    """

    def __init__(self, channels: int, share_weights: bool = False) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"MMRB needs at least 2 channels (it splits them in two halves), got {channels}")
        if share_weights and channels % 2:
            raise ValueError(f"MMRB(share_weights=True) needs an even channel count (equal halves), got {channels}")
        c1, c2 = (channels + 1) // 2, channels // 2
        self.channels, self.split, self.share_weights = channels, (c1, c2), share_weights
        self.conv3 = nn.Conv2d(c1, c1, 3, padding=1)  # W_1, Eq. (5)
        self.conv5 = nn.Conv2d(c2, c2, 5, padding=2)  # W_2, Eq. (6)
        self.act3, self.act5 = nn.PReLU(c1), nn.PReLU(c2)
        if not share_weights:
            self.conv3_mix = nn.Conv2d(channels, c1, 3, padding=1)  # W_1 on Concat[P_1, P_2], Eq. (7)
            self.conv5_mix = nn.Conv2d(channels, c2, 5, padding=2)  # W_2 on Concat[P_1, P_2], Eq. (8)
        self.act3_mix, self.act5_mix = nn.PReLU(c1), nn.PReLU(c2)
        self.bottleneck = nn.Conv2d(channels, channels, 1)  # W_3, Eq. (9)
        self.act_out = nn.PReLU(channels)

    def _mix(self, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.share_weights:
            return self.conv3_mix(cat), self.conv5_mix(cat)
        w3 = torch.cat([self.conv3.weight, self.conv3.weight], dim=1)  # [W_1 | W_1]
        w5 = torch.cat([self.conv5.weight, self.conv5.weight], dim=1)
        return F.conv2d(cat, w3, self.conv3.bias, padding=1), F.conv2d(cat, w5, self.conv5.bias, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"MMRB({self.channels}) expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        x1, x2 = torch.split(x, self.split, dim=1)  # Eq. (4)
        p1, p2 = self.act3(self.conv3(x1)), self.act5(self.conv5(x2))  # Eq. (5)-(6)
        m1, m2 = self._mix(torch.cat([p1, p2], dim=1))
        p1, p2 = self.act3_mix(m1), self.act5_mix(m2)  # Eq. (7)-(8)
        return x + self.act_out(self.bottleneck(torch.cat([p1, p2], dim=1)))  # Eq. (9)-(10)


class PlainResBlock(nn.Module):
    """The "w/o MMRB" ablation's block (Table IV a / Table 5 a): ``x + PReLU(conv3x3(PReLU(conv3x3(x))))``,
    a plain residual block of the same width in the same places. ``(N, C, H, W)`` -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
