"""What ``bfrzoo bench train`` needs to know about a task, declared by the task itself
(:meth:`bfrzoo.tasks.base.BfrzooTask.bench_protocol`), never by a list of model names inside the bench.

* ``overrides``: LightningCLI keys (``"model.init_args.restorer_args"`` -> value) that scale the recipe down to
  the benchmark's face size (a small-scale, equal-budget run needs a small network of that size);
* ``prerequisites``: the pretrained networks the task loads (GPEN's StyleGAN2 prior, PSFR-GAN's parsing network),
  each trained ONCE within the protocol by its own recipe, on the same data and budget, and shared by every row
  that needs the same one;
* ``needs``: extra annotations of the data (``"landmarks"``: the bench gives such a model the landmark data root);
* ``variants``: the paper's ablation rows (overrides of the full model), with the numbers the paper reports for
  them and for the full model (``paper_full``), so the bench can say whether the ablations moved our metrics in the
  paper's direction.

Plain data (no Lightning import), so recipes, tasks and the bench can all read it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prerequisite:
    """A pretrained network a task loads: the task argument that takes its file (``prior_checkpoint``), the
    recipe that trains it (``stylegan2_prior``), the file that recipe's run leaves (``prior.pt``) and the
    overrides that make its network match the task's at the benchmark size."""

    argument: str
    recipe: str
    export: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A paper's ablation row: ``overrides`` of the full model's (dict values are merged one level deep),
    ``paper`` (where it is reported), the paper's numbers for it (``paper_metrics``, bfrzoo metric names), and
    overrides of a prerequisite's recipe that this variant needs instead (``prerequisite_overrides``: recipe ->
    overrides, e.g. a prior pre-trained without noise inputs for GPEN-w/o-noise)."""

    name: str
    overrides: Mapping[str, Any]
    paper: str
    paper_metrics: Mapping[str, float] = field(default_factory=dict)
    prerequisite_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchProtocol:
    """How one task runs in ``bfrzoo bench train`` (see the module docstring). The default: the recipe as it
    is, no prerequisite, no variant."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    prerequisites: tuple[Prerequisite, ...] = ()
    needs: frozenset[str] = frozenset()
    variants: tuple[Variant, ...] = ()
    paper_full: Mapping[str, float] = field(default_factory=dict)


def merge_overrides(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``; where both values are dicts they are merged (``extra`` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def weights_available(cfg: Any) -> bool:
    """True when ``cfg``'s weight file (a :class:`~bfrzoo.weights.PretrainedCfg`) is in the local cache: a bench
    protocol then keeps the loss terms that need it, and otherwise turns them off and says so (it never trains
    with a randomly initialised feature network)."""
    from bfrzoo.weights import cache_dir

    return (cache_dir() / cfg.filename).is_file()
