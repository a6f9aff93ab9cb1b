"""The one mechanism that keeps a frozen, pretrained feature network out of every checkpoint.

Perceptual, style and identity losses (VGG19, VGGFace, ArcFace) and the feature metrics (LPIPS, FID's
Inception) all hold their network through :class:`FrozenFeatureNet`: always in eval mode, no gradients for
its weights (gradients still flow to its INPUT, as a loss needs), moved by ``.to(device)``, and never written to
nor expected in a state dict, so a training checkpoint holds what was trained and nothing that came from a
weight file (which is resolved from its own :class:`~bfrzoo.weights.PretrainedCfg` when the network is built).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn


class FrozenFeatureNet(nn.Module):
    """Holds a pretrained feature network: always in eval mode, no gradients, and never in a state dict.

    The wrapped network is a real submodule (so ``.to(device)`` moves it), but :meth:`state_dict` adds nothing
    for it, and loading a checkpoint that lacks its keys is not an error (its missing keys are dropped by a
    load hook). Metric checkpoints thus hold metric states only, and a feature network's weights come from its
    own file (see :func:`bfrzoo.weights.resolve_weights`).
    """

    def __init__(self, net: nn.Module) -> None:
        """``net``: the pretrained network, with its weights already loaded."""
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.register_load_state_dict_post_hook(FrozenFeatureNet._drop_missing)

    def train(self, mode: bool = True) -> FrozenFeatureNet:  # noqa: ARG002 - locked in eval mode on purpose
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        if destination is None:
            destination = OrderedDict()
        return destination

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:  # noqa: ARG002
        self._prefix = prefix  # nothing of ours is saved; remember where we sit for the post hook

    @staticmethod
    def _drop_missing(module: FrozenFeatureNet, incompatible_keys: Any) -> None:
        # Runs after the wrapped network's children were loaded: forget their missing keys.
        prefix = getattr(module, "_prefix", "")
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(prefix)]


