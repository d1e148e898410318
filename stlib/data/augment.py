"""Image transforms and mixup for static datasets, built from timm's pieces.

The train transform follows the CIFAR recipe of the Spikformer family (``shared/reference/
MODELS-1.md`` section 0 and Spikformer's "CIFAR recipe"): timm ``create_transform`` with
``scale=(1, 1), ratio=(1, 1)`` (a plain resize), horizontal flip, RandAugment and random
erasing in ``const`` mode. timm then normalizes; stlib does not, because normalization comes
after encoding (:class:`stlib.encoders.InputEncoder`). So the first two stages come from timm
(``separate=True``) and the last stage is rebuilt here without ``Normalize``:

* ``ToTensor`` keeps the image in [0, 1];
* random erasing fills with the dataset mean (:class:`MeanFillErasing`). timm's const mode
  writes 0 into a *normalized* image, i.e. the mean colour; writing 0 into a [0, 1] image
  would paint black blocks instead, which is a different augmentation.

RandAugment gets the dataset mean as its fill colour (``img_mean``), as timm derives it from
the normalization mean. Colour jitter is off (timm ignores it when RandAugment is on, and the
config has no jitter field).

Mixup and cutmix act on the batch ``[B, C, H, W]`` in [0, 1] before encoding. Both are convex
combinations (or pixel selections) of images, so they commute with the later per-channel
affine normalization: mixing then normalizing equals the recipe's normalizing then mixing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.data import Mixup, create_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms

__all__ = ["MeanFillErasing", "build_eval_transform", "build_mixup", "build_train_transform"]


class MeanFillErasing:
    """timm's ``RandomErasing`` (mode const) on an unnormalized ``[C, H, W]`` image: the erased
    block takes the per-channel ``mean``, the value timm's 0 stands for after normalization.

    timm picks the block from the image size only; it is applied to a tensor of ones and the
    zeros it writes mark the block, so pixels outside it stay bit-exact.
    """

    def __init__(self, probability: float, mean: Sequence[float]):
        self.probability = float(probability)
        self.mean = torch.tensor(tuple(mean), dtype=torch.float32).view(-1, 1, 1)
        self.eraser = RandomErasing(probability, mode="const", max_count=1, device="cpu")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        marker = self.eraser(torch.ones_like(img))
        return torch.where(marker == 0, self.mean.to(img.dtype), img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.probability}, fill=mean)"


def build_train_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    hflip: float = 0.0,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (1.0, 1.0),
    ratio: tuple[float, float] = (1.0, 1.0),
) -> transforms.Compose:
    """PIL image -> ``[C, img_size, img_size]`` float in [0, 1], with the recipe's augmentation.

    ``scale``/``ratio`` of timm's RandomResizedCrop: (1, 1) is the CIFAR recipes' plain resize;
    ImageNet recipes use scale (0.08, 1) and ratio (3/4, 4/3).

    ``mean``/``std`` are the dataset's; only the mean is used (RandAugment's fill colour and the
    erasing fill), nothing is normalized.
    """
    primary, secondary, _timm_final = create_transform(
        img_size,
        is_training=True,
        scale=scale,
        ratio=ratio,
        hflip=hflip,
        color_jitter=None,
        auto_augment=auto_augment,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        re_prob=0.0,  # erasing is rebuilt below, after ToTensor, without Normalize
        separate=True,
    )
    final = [transforms.ToTensor()]
    if re_prob > 0:
        final.append(MeanFillErasing(re_prob, mean))
    return transforms.Compose([*primary.transforms, *secondary.transforms, *final])


def build_eval_transform(img_size: int, native_size: int, interpolation: str = "bicubic"
                         ) -> transforms.Compose:
    """PIL image -> ``[C, img_size, img_size]`` float in [0, 1]: resize if needed, ToTensor."""
    steps = []
    if img_size != native_size:
        mode = transforms.InterpolationMode(interpolation)
        steps.append(transforms.Resize((img_size, img_size), interpolation=mode))
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


def build_mixup(mixup_alpha: float, cutmix_alpha: float, prob: float, smoothing: float,
                num_classes: int) -> Mixup | None:
    """timm ``Mixup`` (batch mode, switch prob 0.5), or None when both alphas are 0.

    Call it on ``(images [B, C, H, W], labels [B])`` before encoding; it returns soft targets
    (label smoothing included), so the loss is ``SoftTargetCrossEntropy``. B must be even (the
    train loader drops the last incomplete batch). The training loop switches mixing off after
    ``mixup_off_epoch`` by setting ``mixup.mixup_enabled = False`` (Spikformer: after epoch 200).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup/cutmix alphas must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                 label_smoothing=smoothing, num_classes=num_classes)
