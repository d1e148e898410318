"""The assembly of a run from its config, for training, evaluation, analysis and benchmarks:

* :func:`build_model`: input stage + encoder + spiking network, ``images [B, C, H, W]`` (or event
  frames ``[B, T, P, H, W]``, or pixel sequences ``[B, C, L]``) ``-> logits [B, classes]``;
* :func:`build_optimization`: timm's optimizer and cosine/warmup schedule, mixup and the loss;
* the machine: :func:`resolve_device`, :func:`device_name`, :func:`seed_everything`,
  :func:`set_determinism`, :func:`autocast_dtype` (``train.amp``, ``train.cpu_bf16``) and
  :func:`compile_model` (``train.compile``).

Nothing here trains; importing it does not import the training loop.
"""
from __future__ import annotations

import os
import random
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .config import Config, ConfigError, NeuronConfig
from .data import DataBundle
from .encoders import InputEncoder
from .layers.sequence import SequenceAsRow
from .losses import TETLoss
from .models import create_model
from .neurons import neuron_factory, neurons_of
from .neurons.registry import neuron_settings


class TimeFirst(nn.Module):
    """Event frames from the loader ``[B, T, P, H, W]`` -> the models' layout ``[T, B, P, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


def neuron_config_settings(neuron: NeuronConfig) -> dict:
    """The settings of ``config.neuron`` that go to the neuron: the ones set (not None), less
    those left at their default that this neuron type does not take (the default
    ``detach_reset: true`` means nothing to MultiSpike, which has no reset). A setting changed
    from its default still reaches the neuron, so a wrong one fails naming the valid keys."""
    defaults, valid = vars(NeuronConfig()), neuron_settings(neuron.type)
    return {k: v for k, v in vars(neuron).items()
            if k != "type" and v is not None and (k in valid or v != defaults[k])}


def build_model(config: Config, bundle: DataBundle) -> nn.Sequential:
    """Input stage + spiking network: ``images [B, C, H, W]`` (or event frames
    ``[B, T, P, H, W]``) ``-> logits [B, classes]``.

    The neuron type and its settings come from ``config.neuron`` (None = the neuron's own
    default), so the configured surrogate and alpha reach every neuron of the model.
    Event frames are already spikes: they are put time-first and neither encoded nor
    normalized, so an encoding other than ``direct`` is refused for them.
    """
    T = config.model.T
    neuron = neuron_factory(config.neuron.type, T=T, **neuron_config_settings(config.neuron))
    arch = dict(num_classes=config.model.num_classes or bundle.num_classes, T=T,
                img_size=bundle.img_size, in_chans=bundle.in_chans)
    if config.train.loss == "tet":  # TET trains on every time step's logits [T, B, classes]
        arch["per_step_logits"] = True
    net = create_model(config.model.name, neuron=neuron, **{**arch, **config.model.kwargs})
    kind = getattr(bundle, "kind", "images")
    events = kind == "events"
    if events and config.model.encoding != "direct":
        raise ConfigError(f"model.encoding={config.model.encoding!r} cannot apply to event data "
                          f"({bundle.name} frames are already spikes); use direct")
    if events and bundle.time_steps != T:
        raise ConfigError(f"{bundle.name} frames have {bundle.time_steps} time bins but "
                          f"model.T={T}")
    encoder = InputEncoder(config.model.encoding, T, None if events else bundle.mean,
                           None if events else bundle.std, seed=config.experiment.seed)
    stages = [("time_first", TimeFirst())] if events else []
    if kind == "sequence":
        if config.train.mixup > 0 or config.train.cutmix > 0:
            raise ConfigError(f"train.mixup/cutmix cannot apply to {bundle.name} pixel sequences; "
                              f"set them to 0")
        stages = [("as_row", SequenceAsRow())]  # [B, C, L] -> [B, C, 1, L]: encoders apply as is
    return nn.Sequential(OrderedDict([*stages, ("encoder", encoder), ("net", net)]))


def build_optimization(config: Config, model: nn.Module, num_classes: int):
    """timm's AdamW (no weight decay on biases and norms) + cosine with warmup, mixup, losses.

    Returns ``(optimizer, scheduler, num_epochs, mixup or None, train_loss)``; ``num_epochs``
    includes the schedule's cooldown.
    """
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    tc = config.train
    optimizer = create_optimizer_v2(model, opt=tc.opt, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=tc.sched, num_epochs=tc.epochs, warmup_epochs=tc.warmup_epochs,
        warmup_lr=tc.warmup_lr, min_lr=tc.min_lr, cooldown_epochs=tc.cooldown_epochs)
    mixup = None
    if tc.mixup > 0 or tc.cutmix > 0:
        mixup = Mixup(mixup_alpha=tc.mixup, cutmix_alpha=tc.cutmix, prob=tc.mixup_prob,
                      label_smoothing=tc.smoothing, num_classes=num_classes)
    if tc.loss == "tet":
        train_loss = TETLoss(tc.tet_lambda, tc.tet_phi, smoothing=0.0 if mixup else tc.smoothing)
    elif mixup is not None:
        train_loss = SoftTargetCrossEntropy()  # smoothing is inside the mixed targets
    elif tc.smoothing > 0:
        train_loss = LabelSmoothingCrossEntropy(smoothing=tc.smoothing)
    else:
        train_loss = nn.CrossEntropyLoss()
    return optimizer, scheduler, num_epochs, mixup, train_loss


#: model kwargs that are ablation switches, recorded in their own summary columns
SWITCH_KWARGS = ("attn", "embed", "attn_kwargs")


def model_label(config: Config) -> str:
    """The registered model name, plus the architecture settings a run changed
    (``spikformer_4_384 [depth=1, embed_dim=64, num_heads=4]`` on the quick preset), so a
    results table never shows a shrunken model under the published model's name."""
    changed = {k: v for k, v in sorted(config.model.kwargs.items()) if k not in SWITCH_KWARGS}
    if not changed:
        return config.model.name
    return f"{config.model.name} [{', '.join(f'{k}={v}' for k, v in changed.items())}]"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_neuron(model: nn.Module) -> nn.Module | None:
    found = neurons_of(model)
    return found[0][1] if found else None


# ---- the machine -----------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be a valid torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda or "
                          f"cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r} asked for CUDA, but no CUDA device is "
                          f"available here; use device auto or cpu")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(enabled: bool, device: torch.device) -> None:
    """``train.deterministic``: deterministic kernels everywhere (an error where none exists)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick fast kernels


def autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training and validation: float16 on CUDA with ``train.amp``
    (with a GradScaler), bfloat16 on CPU with ``train.cpu_bf16`` (no scaler: bf16 has fp32's
    range), else None (fp32)."""
    if device.type == "cuda" and config.train.amp:
        return torch.float16
    if device.type == "cpu" and config.train.cpu_bf16:
        return torch.bfloat16
    return None


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``train.compile``: ``torch.compile(model)``, or ``model`` itself when off or unsupported.

    Safe to leave on: the network's parameters, buffers and state dict stay those of ``model``
    (checkpoints, Grad-CAM and the analyses use the plain module), the neurons run their
    reference loop under the compiler, which fuses it (:func:`stlib.neurons.kernels.select`),
    and where Dynamo cannot run (an unsupported Python or platform) one warning says so and the
    run goes on eagerly. The conv weights are moved to channels-last memory (same values, same
    state dict): compiled Spikformer-4-384 training on 2 CPU cores is about 5 % faster so. The first steps pay the compile (on 2 CPU cores about 80 s for
    Spikformer-4-384 with a cold cache, 20 s with a warm one), and once more for the first
    validation pass and the first smaller last batch.
    """
    if not enabled:
        return model
    if not torch._dynamo.is_dynamo_supported():
        warnings.warn("train.compile: torch.compile is not supported on this Python/platform; "
                      "running eagerly", RuntimeWarning, stacklevel=2)
        return model
    return torch.compile(model.to(memory_format=torch.channels_last))
