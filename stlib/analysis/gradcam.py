"""Grad-CAM over time for spiking models, on pytorch-grad-cam (``pytorch_grad_cam``).

A spiking layer's output carries a time axis: tokens ``[T, B, N, D]`` (Spikformer-family
models) or feature maps ``[T, B, C, H, W]`` (hierarchical models). :func:`cam_reshape` folds
time into the batch, ``[T*B, D, sqrt(N), sqrt(N)]`` or ``[T*B, C, H, W]``, so the library computes
one channel weighting and one map per (time step, image); :func:`time_gradcam` unfolds them into
``per_step [T, B, H, W]`` and adds their mean over T. (The reference benchmark does the same
fold but keeps only t = 0.)

Gradients: the spike is a step function, but every stlib neuron has a surrogate gradient, so
with gradients enabled they reach the target layer. :func:`time_gradcam` turns gradients on
(also under ``torch.no_grad``) and runs the model in eval mode (BatchNorm on running statistics,
as at test time); it restores the training flag afterwards.

The default target layer is the model's ``cam_target_layer()`` (every registered model has one:
the input of the last block's MLP for Spikformer-family models, the last stage for
hierarchical ones); pass ``layer=`` to override.

Also here: :func:`load_run` (rebuild a trained run's model), :func:`load_model` (a registered
model + a checkpoint file) and :func:`load_images` (a PNG folder or a run's validation set).
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import resolve_path
from ..registry import Registry

__all__ = ["CAM_METHODS", "CamResult", "Subject", "cam_reshape", "find_target_layer",
           "load_images", "load_model", "load_run", "load_subject", "overlay", "save_overlays",
           "time_gradcam"]


def _methods() -> Registry:
    from pytorch_grad_cam import (GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM)

    table: Registry = Registry("Grad-CAM method")
    table.add("gradcam", GradCAM, aliases=("grad-cam", "GradCAM"))
    table.add("gradcam++", GradCAMPlusPlus, aliases=("gradcampp", "grad-cam++", "GradCAMPlusPlus"))
    table.add("xgradcam", XGradCAM)
    table.add("layercam", LayerCAM)
    table.add("hirescam", HiResCAM)
    return table


CAM_METHODS = _methods()


def find_target_layer(model: nn.Module) -> nn.Module:
    """The ``cam_target_layer()`` of ``model`` or of its first submodule that has one (the
    ``net`` of an encoder + network ``nn.Sequential``)."""
    for module in model.modules():
        if callable(getattr(module, "cam_target_layer", None)):
            return module.cam_target_layer()
    raise ValueError(f"{type(model).__name__} has no cam_target_layer(); pass layer= explicitly")


def cam_reshape(x: torch.Tensor) -> torch.Tensor:
    """Fold time into the batch for pytorch-grad-cam.

    * feature maps ``[T, B, C, H, W]`` -> ``[T*B, C, H, W]``
    * tokens ``[T, B, N, D]`` -> ``[T*B, D, sqrt(N), sqrt(N)]``
    * tokens already folded ``[T*B, N, D]`` (or an ANN's ``[B, N, D]``) -> ``[T*B, D, sqrt(N), sqrt(N)]``

    N must be square, or N - 1 (a class token first, dropped).
    """
    if x.dim() == 5:
        return x.flatten(0, 1)
    if x.dim() == 4:
        x = x.flatten(0, 1)  # [T*B, N, D], t-major
    if x.dim() != 3:
        raise ValueError(f"Grad-CAM needs tokens [T, B, N, D] or maps [T, B, C, H, W] at the "
                         f"target layer, got shape {tuple(x.shape)}")
    TB, N, D = x.shape
    side = math.isqrt(N)
    if side * side != N:
        if N < 2 or math.isqrt(N - 1) ** 2 != N - 1:
            raise ValueError(f"{N} tokens at the target layer do not form a square grid")
        x, side = x[:, 1:], math.isqrt(N - 1)
    return x.reshape(TB, side, side, D).permute(0, 3, 1, 2)  # [T*B, D, side, side]


@dataclass
class CamResult:
    """Maps in [0, 1] at input resolution: ``per_step [T, B, H, W]``, ``mean [B, H, W]`` (the
    mean over T, rescaled to [0, 1]); ``targets`` the explained class per image; ``logits
    [B, classes]``; ``method`` the Grad-CAM variant."""

    per_step: np.ndarray
    mean: np.ndarray
    targets: list[int]
    logits: np.ndarray
    method: str

    @property
    def T(self) -> int:
        return self.per_step.shape[0]


def _frames_cam(cls: type) -> type:
    """``cls`` for event frames ``[B, T, P, H, W]``: pytorch-grad-cam reads a 5-D input as 3-D
    volumes (and OpenCV then fails to resize to three sizes); the maps belong at ``H x W``."""

    class FramesCAM(cls):
        def get_target_width_height(self, input_tensor):
            return input_tensor.size(-1), input_tensor.size(-2)

    FramesCAM.__name__ = f"Frames{cls.__name__}"
    return FramesCAM


def time_gradcam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None = None,
                 method: str = "gradcam", layer: nn.Module | None = None,
                 device: torch.device | str = "cpu") -> CamResult:
    """One Grad-CAM map per time step and their mean for ``images [B, C, H, W]`` (or event
    frames ``[B, T, P, H, W]`` for an event model, as its loader yields them).

    ``targets``: the class to explain per image (default: the predicted class). ``method``: a
    name in :data:`CAM_METHODS` (``gradcam``, ``gradcam++``, ...). ``layer``: the target layer
    (default :func:`find_target_layer`); its output must be ``[T, B, N, D]`` or ``[T, B, C, H, W]``.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = CAM_METHODS.get(method)
    if images.dim() == 5:  # event frames [B, T, P, H, W]: maps at H x W, not a 3-D volume
        cls = _frames_cam(cls)
    layer = layer if layer is not None else find_target_layer(model)
    was_training = model.training
    model.to(device)
    images = images.to(device).float()
    B = images.shape[0]
    with torch.enable_grad():
        # the input needs a gradient too: a model with frozen weights would otherwise build no
        # graph, and the library's backward would fail far from the cause
        images = images.clone().requires_grad_(True)
        cam = cls(model=model, target_layers=[layer], reshape_transform=cam_reshape)
        try:
            wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
            maps = cam(input_tensor=images, targets=wanted)  # [T*B, H, W], each min-max scaled
            if not cam.activations_and_grads.gradients:
                raise RuntimeError(f"no gradient reached the target layer {type(layer).__name__}; "
                                   f"is it on the path to the logits?")
            logits = cam.outputs.detach().cpu().numpy()
        finally:
            cam.activations_and_grads.release()
            model.train(was_training)
    if logits.ndim != 2:
        raise ValueError(f"Grad-CAM explains logits [B, classes]; the model returned shape "
                         f"{logits.shape} (per-step logits? average them over T first)")
    per_step = maps.reshape(-1, B, *maps.shape[1:])  # [T, B, H, W]: time was folded t-major
    mean = scale_cam_image(per_step.mean(0))
    chosen = [int(t) for t in targets] if targets is not None else logits.argmax(-1).tolist()
    return CamResult(per_step=per_step, mean=np.asarray(mean, dtype=np.float32), targets=chosen,
                     logits=logits, method=CAM_METHODS.canonical(method))


def _rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image ``[C, H, W]`` in [0, 1] (C = 1 or 3), or event frames ``[T, P, H, W]`` / ``[P, H,
    W]`` with P = 2 polarities, -> float32 ``[H, W, 3]``. Events are summed over time and shown
    ON in red, OFF in blue, scaled by the busiest pixel."""
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    img = img.astype(np.float32)
    if img.ndim == 4:  # [T, P, H, W]: event counts over the whole recording
        img = img.sum(0)
    if img.shape[0] == 2:
        img = img / max(float(img.max()), 1e-12)
        img = np.stack([img[0], np.zeros_like(img[0]), img[1]])
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return img[:3].transpose(1, 2, 0)


def overlay(image: torch.Tensor | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``show_cam_on_image`` on an ``image [C, H, W]`` in [0, 1] and a ``mask [H, W]`` in [0, 1]:
    uint8 RGB ``[H, W, 3]``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(_rgb(image), np.clip(mask, 0.0, 1.0).astype(np.float32), use_rgb=True)


def save_overlays(result: CamResult, images: torch.Tensor, output_dir: str | Path,
                  names: Sequence[str] | None = None, scale: int = 1) -> list[Path]:
    """Write one PNG per image: its overlays at t = 0..T-1 and of the mean, side by side.

    ``scale`` enlarges small images (nearest neighbour) so an 8x8 digit stays visible.
    Returns the written paths (``<name>_<method>.png``).
    """
    from PIL import Image

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = names or [f"image{i:02d}" for i in range(len(images))]
    paths = []
    for b, name in enumerate(names):
        panels = [overlay(images[b], result.per_step[t, b]) for t in range(result.T)]
        panels.append(overlay(images[b], result.mean[b]))
        strip = Image.fromarray(np.concatenate(panels, axis=1))
        if scale > 1:
            strip = strip.resize((strip.width * scale, strip.height * scale), Image.NEAREST)
        path = output_dir / f"{Path(name).stem}_{result.method.replace('+', 'p')}.png"
        strip.save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Getting a model and images to look at
# --------------------------------------------------------------------------------------------


def load_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[Any, nn.Sequential, Any]:
    """``(config, model, bundle)`` of a trained run ``outputs/<study>/<run_id>/``.

    ``model`` is ``stlib.build.build_model(config, bundle)`` (encoder + network, taking images
    ``[B, C, H, W]`` in [0, 1]) with the weights of ``checkpoints/<checkpoint>.pt``, in eval mode
    on the CPU; ``bundle`` holds the run's data loaders (seed 0).
    """
    from ..data import build_dataloaders
    from ..params import load_params
    from ..build import build_model

    run_dir = resolve_path(run_dir)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise FileNotFoundError(f"no checkpoint {path}; found {found or 'none'} in {run_dir}")
    config = load_params(run_dir / "config.yaml")
    bundle = build_dataloaders(config.data, seed=0)
    model = build_model(config, bundle)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return config, model.eval(), bundle


def load_model(name: str, checkpoint: str | Path | None = None, *, overrides: Sequence[str] = (),
               mean: Sequence[float] = (), std: Sequence[float] = (), encoding: str = "direct",
               T: int = 4) -> nn.Sequential:
    """A registered model (``create_model(name, T=T, **overrides)``) behind an input encoder,
    taking images ``[B, C, H, W]`` in [0, 1], like a trained run's model.

    ``overrides``: ``"key=value"`` strings (YAML values: ``"embed_dim=32"``,
    ``"pool_stages=[false, false, true, true]"``). ``checkpoint``: a file holding a state dict of
    the bare network or of encoder + network, bare or under ``"model"`` (a run's checkpoint);
    None keeps the random initialisation. ``mean``/``std``: per-channel normalisation after
    encoding (empty: none); the encoder's own state in a checkpoint is ignored.
    """
    import yaml

    from ..encoders import InputEncoder
    from ..models import create_model

    kwargs = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model override {item!r} is not key=value")
        kwargs[key.strip()] = yaml.safe_load(value)
    net = create_model(name, T=T, **kwargs)
    if not checkpoint:
        warnings.warn(f"{name} has no checkpoint: its weights are random, so its Grad-CAM maps "
                      f"are close to flat and its firing rates are those of an untrained model; "
                      f"give checkpoint= (a weights file) or run_dir= (a trained run)",
                      UserWarning, stacklevel=2)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        if any(k.startswith("net.") for k in state):  # encoder + network: keep the network's
            state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        net.load_state_dict(state)
    encoder = InputEncoder(encoding, T, tuple(mean) or None, tuple(std) or None)
    return nn.Sequential(OrderedDict(encoder=encoder, net=net)).eval()


#: Sample sets named ``<set>_<index>_<label>.png`` (../shared/data/cifar_samples) -> classes.
SAMPLE_SET_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10}


def load_images(spec: str | Path, *, bundle: Any = None, img_size: int | None = None,
                in_chans: int | None = None, max_images: int = 8, num_classes: int | None = None
                ) -> tuple[torch.Tensor, list[int | None], list[str]]:
    """``(images [B, C, H, W] in [0, 1], labels, names)`` to look at (event frames
    ``[B, T, P, H, W]`` for an event run's validation set).

    ``spec``: ``"val"`` (or ``"digits"``): the first images of ``bundle.val_loader`` (a run's
    validation set); otherwise a folder of PNG/JPEG files, read in name order, converted to
    ``in_chans`` channels and resized to ``img_size`` when given. A label is read from a file
    name ending in ``_<int>`` (``cifar10_03_0.png`` -> 0), else None.

    ``num_classes`` (the model's): from a folder that mixes sample sets (``cifar10_*`` and
    ``cifar100_*``) only the set with that many classes is read, and an image whose label the
    model cannot output is left out with a warning, so labels always match the model.
    """
    if str(spec) in ("val", "digits"):
        if bundle is None:
            raise ValueError(f"images={spec!r} needs a run (its validation set); give run_dir, or "
                             f"a folder of images")
        xs, ys = [], []
        for x, y in bundle.val_loader:
            xs.append(x)
            ys.extend(int(v) for v in y)
            if sum(len(t) for t in xs) >= max_images:
                break
        images = torch.cat(xs)[:max_images]
        return images, ys[:max_images], [f"val{i:03d}" for i in range(len(images))]

    from PIL import Image

    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"images: {folder} is neither 'val' nor a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"no PNG/JPEG images in {folder}")
    if num_classes is not None:
        files = _files_for_classes(files, num_classes, folder)
    files = files[:max_images]
    tensors, labels = [], []
    for path in files:
        img = Image.open(path).convert("L" if in_chans == 1 else "RGB")
        if img_size and img.size != (img_size, img_size):
            img = img.resize((img_size, img_size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        tensors.append(torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))
        labels.append(_label(path))
    return torch.stack(tensors), labels, [p.name for p in files]


def _label(path: Path) -> int | None:
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() and "_" in path.stem else None


def _files_for_classes(files: list[Path], num_classes: int, folder: Path) -> list[Path]:
    sets = {p: p.stem.split("_", 1)[0] for p in files}
    if any(name in SAMPLE_SET_CLASSES for name in sets.values()):
        fitting = [p for p in files if SAMPLE_SET_CLASSES.get(sets[p]) == num_classes]
        if not fitting:
            found = sorted({n for n in sets.values() if n in SAMPLE_SET_CLASSES})
            raise ValueError(f"{folder} holds the sample sets {found}, none with the model's "
                             f"{num_classes} classes")
        files = fitting
    kept = [p for p in files if _label(p) is None or _label(p) < num_classes]
    if len(kept) < len(files):
        warnings.warn(f"left out {len(files) - len(kept)} image(s) of {folder} whose label is "
                      f">= the model's {num_classes} classes", UserWarning, stacklevel=3)
    if not kept:
        raise ValueError(f"no image of {folder} has a label below {num_classes}")
    return kept


@dataclass
class Subject:
    """What a visualization looks at: the model (encoder + network, eval mode), the run's
    config and data bundle (None for a bare checkpoint), where figures go, the input format."""

    model: nn.Sequential
    config: Any
    bundle: Any
    run_dir: Path | None
    figures_dir: Path
    img_size: int | None
    in_chans: int | None
    name: str

    @property
    def num_classes(self) -> int | None:
        """The classes the network outputs (what labels of images shown to it must fit)."""
        return getattr(getattr(self.model, "net", self.model), "num_classes", None)


def load_subject(run_dir: str | Path = "", checkpoint: str = "", model: str = "",
                 overrides: Sequence[str] = (), T: int = 4, mean: Sequence[float] = (),
                 std: Sequence[float] = (), output_dir: str | Path = "") -> Subject:
    """The notebook's two ways in: a trained run (``run_dir``, ``checkpoint`` = ``best`` | ``last``,
    default best), or a registered ``model`` with a ``checkpoint`` file (empty: random init; see
    :func:`load_model`). Figures go to ``output_dir``, default ``<run_dir>/figures`` (or
    ``outputs/figures/<model>`` for a bare model)."""
    if run_dir:
        config, net, bundle = load_run(run_dir, checkpoint or "best")
        run_dir = resolve_path(run_dir)
        figures = resolve_path(output_dir) if output_dir else run_dir / "figures"
        return Subject(net, config, bundle, run_dir, figures,
                       bundle.img_size, bundle.in_chans, config.model.name)
    if not model:
        raise ValueError("give run_dir (a trained run) or model (a registered name)")
    net = load_model(model, checkpoint or None, overrides=overrides, mean=mean, std=std, T=T)
    inner = net.net
    figures = resolve_path(output_dir) if output_dir else resolve_path("outputs/figures") / model
    return Subject(net, None, None, None, figures,
                   getattr(inner, "img_size", None), getattr(inner, "in_chans", None), model)
