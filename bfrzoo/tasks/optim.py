"""Optimizer wiring shared by the GAN tasks: Adam over named parameter groups, each with its own learning rate,
and StyleGAN2's correction for lazy regularisation (Karras et al., CVPR 2020, appendix B)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

#: ``{group name: (parameters, learning rate)}``.
ParamGroups = Mapping[str, tuple[Iterable[nn.Parameter], float]]


def adam(groups: ParamGroups, betas: tuple[float, float], reg_every: int | None = None) -> torch.optim.Adam:
    """Adam with one parameter group per entry of ``groups``, in order, each keeping its ``name`` (for logs and
    tests) and its learning rate.

    ``reg_every = k`` (lazy regularisation: the penalty is added every ``k`` steps) applies StyleGAN2's
    correction ``c = k / (k + 1)`` to every learning rate (``lr * c``) and to the betas (``beta ** c``);
    ``None`` leaves them as given.
    """
    c = reg_every / (reg_every + 1) if reg_every else 1.0
    param_groups = [{"params": list(params), "lr": lr * c, "name": name} for name, (params, lr) in groups.items()]
    if not param_groups:
        raise ValueError("adam needs at least one parameter group")
    return torch.optim.Adam(param_groups, lr=param_groups[0]["lr"], betas=(betas[0] ** c, betas[1] ** c))
