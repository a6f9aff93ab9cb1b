"""Inference modes (fp32, channels_last, bf16 autocast, torch.compile and their combinations) and
:func:`fastest_mode`, the choice of the fastest one whose restored image stays within a stated tolerance of fp32.

A mode changes HOW a network runs, never its weights: :func:`apply_mode` returns a :class:`ModeNetwork` that keeps
the network's contract (``(N, 3, H, W)`` in ``[-1, 1]`` -> same, ``input_size`` / ``size_divisor``), so
:func:`bfrzoo.interface.restore_batch` and :class:`~bfrzoo.interface.Restorer` run it like the network itself.

The tolerance (:data:`DEFAULT_TOLERANCE`): the largest absolute difference, over every pixel and channel of the
restored image in ``[0, 1]``, between the mode's output and the fp32 default's on the same input: 4/255, i.e.
no 8-bit pixel value moves by more than 4 levels. Layout changes and compilation reorder floating-point sums
(differences around 1e-6); bf16 rounds activations to 8 significant bits (around 1e-2 on some pixels).

``Restorer(net, mode="auto")`` and ``bfrzoo restore --mode auto`` call :func:`fastest_mode` once per
(network, device, input size, batch) in a process and say which mode they picked (``Restorer.mode_choice``).
"""
from __future__ import annotations

import copy
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError, UnknownNameError

#: Max abs difference of the restored image (``[0, 1]``) from fp32 that a mode may have: 4 of 255 levels.
DEFAULT_TOLERANCE: float = 4.0 / 255.0

#: A non-default mode is chosen only when it is at least this much faster than fp32 (timing noise margin).
MIN_SPEEDUP: float = 1.05


@dataclass(frozen=True)
class InferenceMode:
    """How a network runs: autocast ``dtype`` (float32 = off), ``channels_last`` weights and inputs, and
    ``torch.compile`` (inductor, static shapes)."""

    name: str
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compile: bool = False


#: Every mode ``bfrzoo bench speed`` measures and ``Restorer(mode=...)`` accepts, the fp32 default first.
MODES: dict[str, InferenceMode] = {
    m.name: m
    for m in (
        InferenceMode("fp32"),
        InferenceMode("channels_last", channels_last=True),
        InferenceMode("bf16", torch.bfloat16),
        InferenceMode("bf16+channels_last", torch.bfloat16, channels_last=True),
        InferenceMode("compile", compile=True),
        InferenceMode("compile+channels_last", channels_last=True, compile=True),
        InferenceMode("compile+bf16+channels_last", torch.bfloat16, channels_last=True, compile=True),
    )
}


def get_mode(name: str) -> InferenceMode:
    """``MODES[name]`` or one :class:`UnknownNameError` listing the modes."""
    if name not in MODES:
        raise UnknownNameError(f"unknown inference mode {name!r}; modes: auto, {', '.join(MODES)}")
    return MODES[name]


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively: a GPU with bf16, or a CPU with AVX512-BF16 / AMX (oneDNN's check;
    elsewhere bf16 is emulated, tens of times slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def mode_unavailable(mode: InferenceMode, device: str | torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (``None``: it can)."""
    device = torch.device(device)
    if mode.dtype == torch.bfloat16 and not bf16_supported(device):
        return "no native bf16 on this CPU (needs AVX512-BF16 or AMX)" if device.type == "cpu" else "no bf16 on this device"
    if mode.compile:
        if device.type == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            return "torch.compile on CPU needs a C++ compiler (g++)"
        if device.type == "cuda":
            try:
                import triton  # noqa: F401
            except ImportError:
                return "torch.compile on CUDA needs triton"
    return None


def _to_memory_format(net: nn.Module, fmt: torch.memory_format) -> nn.Module:
    """``Module.to(memory_format=...)`` for the 4-d tensors only (``Module.to`` refuses the 5-d modulated-conv
    weights and the 2-d linear ones)."""
    for t in [*net.parameters(), *net.buffers()]:
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=fmt)
    return net


class ModeNetwork(nn.Module):
    """``net`` run in ``mode``: inputs in channels_last when the mode says so, autocast to the mode's dtype, the
    compiled module when it compiles. Same contract as ``net``: ``(N, 3, H, W)`` in ``[-1, 1]`` -> the network's
    output (first element when it returns several) as float32; ``input_size`` and ``size_divisor`` copied."""

    def __init__(self, net: nn.Module, mode: InferenceMode) -> None:
        super().__init__()
        self.net = net
        self.mode = mode
        self.input_size = getattr(net, "input_size", None)
        self.size_divisor = int(getattr(net, "size_divisor", 1))
        # the compiled wrapper is not registered as a submodule: the weights stay listed once
        self.__dict__["_run"] = torch.compile(net, dynamic=False) if mode.compile else net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.mode.dtype, enabled=self.mode.dtype != torch.float32):
            y = self.__dict__["_run"](x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.float().contiguous()


def apply_mode(net: nn.Module, mode: InferenceMode | str, copy_weights: bool = True) -> ModeNetwork:
    """``net`` wrapped to run in ``mode`` (a name or an :class:`InferenceMode`). channels_last converts the 4-d
    weights, of a deep copy unless ``copy_weights=False`` (then ``net`` itself is converted)."""
    mode = get_mode(mode) if isinstance(mode, str) else mode
    if mode.channels_last:
        net = _to_memory_format(copy.deepcopy(net) if copy_weights else net, torch.channels_last)
    return ModeNetwork(net, mode)


def probe_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """A seeded ``(batch, 3, size, size)`` probe in ``[-1, 1]``: smooth random colour fields (bilinear
    upsampling of 1/8-size noise) plus fine noise, closer to a face crop's statistics than white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(1, size // 8), max(1, size // 8), generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.05 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)
    return x * 2 - 1


def restored_difference(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference of two network outputs as restored images in ``[0, 1]`` (what a user sees)."""
    to01 = lambda t: ((t.float() + 1) * 0.5).clamp(0, 1)  # noqa: E731
    return float((to01(out.detach()) - to01(ref.detach())).abs().max())


@dataclass(frozen=True)
class ModeChoice:
    """What :func:`fastest_mode` measured and chose.

    Attributes:
        mode: the chosen mode.
        device: the device type it was measured on (``"cpu"``, ``"cuda"``).
        tolerance: the max abs difference from fp32 allowed (restored image in ``[0, 1]``).
        images_per_s: per mode within the tolerance, throughput at ``batch`` x ``size``.
        max_abs_diff: per mode tried, its max abs difference from fp32.
        skipped: per mode not timed, why (unavailable on the device, or outside the tolerance).
        size, batch: the probe's size and batch.
    """

    mode: InferenceMode
    device: str
    tolerance: float
    images_per_s: dict[str, float]
    max_abs_diff: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    size: int = 0
    batch: int = 1

    @property
    def speedup(self) -> float:
        """Throughput of the chosen mode over fp32's."""
        return self.images_per_s[self.mode.name] / self.images_per_s["fp32"]

    def describe(self) -> str:
        """One line for users: which mode, how much faster, how close to fp32."""
        return (
            f"inference mode {self.mode.name} on {self.device}: {self.speedup:.2f}x the fp32 default "
            f"({self.images_per_s[self.mode.name]:.2f} img/s at batch {self.batch}, {self.size} px), max abs "
            f"difference from fp32 {self.max_abs_diff[self.mode.name]:.1e} (tolerance {self.tolerance:.4f})"
        )


_CACHE: dict[tuple, ModeChoice] = {}


def _cache_key(net: nn.Module, device: torch.device, size: int, batch: int, tolerance: float, modes: Sequence[str]) -> tuple:
    shapes = tuple((n, tuple(p.shape)) for n, p in net.state_dict().items())
    return (type(net).__module__, type(net).__qualname__, hash(shapes), device.type, size, batch, tolerance, tuple(modes))


def fastest_mode(
    net: nn.Module,
    device: str | torch.device,
    size: int | None = None,
    batch: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_compile: bool = False,
    candidates: Sequence[str] | None = None,
    repeats: int = 3,
    cache: bool = True,
) -> ModeChoice:
    """The fastest inference mode of ``net`` on ``device`` whose restored image is within ``tolerance`` of fp32.

    Every candidate available on the device runs a seeded probe (:func:`probe_images`, ``batch`` x ``size``;
    ``size`` defaults to the network's ``input_size``, else 256, rounded up to its ``size_divisor``); those within
    the tolerance are timed interleaved (:func:`bfrzoo.bench.timing.time_interleaved`, one warm-up call,
    ``repeats`` rounds, medians) against fp32, and the fastest wins if it beats fp32 by :data:`MIN_SPEEDUP`
    (else fp32: timing noise is not a reason to change the numerics). Compiled modes are candidates only with
    ``allow_compile`` (compiling costs seconds to minutes, worth it for long jobs only). The weights of ``net``
    are not changed. Cached per (architecture and weight shapes, device type, size, batch, tolerance,
    candidates) for the life of the process unless ``cache=False``.
    """
    from bfrzoo.bench.timing import time_interleaved

    device = torch.device(device)
    names = list(candidates) if candidates is not None else [
        n for n, m in MODES.items() if allow_compile or not m.compile
    ]
    if "fp32" not in names:
        names.insert(0, "fp32")
    for name in names:
        get_mode(name)
    divisor = int(getattr(net, "size_divisor", 1))
    size = int(size or getattr(net, "input_size", None) or 256)
    size = -(-size // divisor) * divisor
    key = _cache_key(net, device, size, batch, tolerance, names)
    if cache and key in _CACHE:
        return _CACHE[key]
    net = net.eval().to(device)
    x = probe_images(batch, size).to(device)
    skipped: dict[str, str] = {}
    diffs: dict[str, float] = {}
    runners: dict[str, ModeNetwork] = {}
    with torch.inference_mode():
        torch.manual_seed(0)
        ref = apply_mode(net, "fp32")(x)
        for name in names:
            mode = MODES[name]
            why = mode_unavailable(mode, device)
            if why:
                skipped[name] = why
                continue
            runner = apply_mode(net, mode)
            torch.manual_seed(0)  # networks that draw noise draw the same noise
            diffs[name] = restored_difference(runner(x), ref)
            if diffs[name] > tolerance:
                skipped[name] = f"max abs difference {diffs[name]:.1e} > tolerance {tolerance:.4f}"
                continue
            runners[name] = runner
        timings = time_interleaved({n: (lambda r=r: r(x)) for n, r in runners.items()}, device, repeats, warmup=1)
    speed = {n: batch / t.median_s for n, t in timings.items()}
    best = max(speed, key=speed.get)
    if best != "fp32" and speed[best] < MIN_SPEEDUP * speed["fp32"]:
        best = "fp32"
    choice = ModeChoice(MODES[best], device.type, tolerance, speed, diffs, skipped, size, batch)
    if cache:
        _CACHE[key] = choice
    return choice


def resolve_mode(
    net: nn.Module, device: str | torch.device, mode: str | InferenceMode, **fastest: object
) -> tuple[InferenceMode, ModeChoice | None]:
    """``"auto"`` -> :func:`fastest_mode` (its keyword arguments in ``fastest``); a mode name or
    :class:`InferenceMode` -> itself, checked against the device (one :class:`BfrzooError` when it cannot run)."""
    if isinstance(mode, str) and mode == "auto":
        choice = fastest_mode(net, device, **fastest)  # type: ignore[arg-type]
        return choice.mode, choice
    chosen = get_mode(mode) if isinstance(mode, str) else mode
    why = mode_unavailable(chosen, device)
    if why:
        raise BfrzooError(f"inference mode {chosen.name!r} cannot run on {torch.device(device)}: {why}; use auto or fp32")
    return chosen, None
