"""stlib.analysis.gradcam: time-folded Grad-CAM on pytorch-grad-cam, for every registered model."""
from __future__ import annotations

import inspect
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import stlib
from stlib.analysis.firing import calibrate_batchnorm
from stlib.build import TimeFirst
from stlib.analysis.gradcam import (CAM_METHODS, cam_reshape, find_target_layer, load_images,
                                    load_model, load_run, save_overlays, time_gradcam)
from stlib.models import create_model, list_models
from stlib.models._registry import model_class
from stlib.registry import UnknownNameError

REPO = Path(__file__).resolve().parents[1]
CIFAR_SAMPLES = REPO.parent / "shared" / "data" / "cifar_samples"
# CIFAR-sized input, the quick preset's widths: hierarchical models keep a 2x2 grid or more
TINY = dict(img_size=32, embed_dim=64, depth=1, num_heads=4, T=2, num_classes=3)


def tiny_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """``name`` at tiny widths on 32x32 inputs and 4 inputs for it: images ``[4, C, 32, 32]``,
    or for an event model (2 input channels) spike frames ``[4, T, 2, 32, 32]`` behind the
    trainer's time-first stage, as a DVS run's model takes them."""
    default = inspect.signature(model_class(name).__init__).parameters.get("in_chans")
    events = default is not None and default.default == 2
    torch.manual_seed(0)
    net = create_model(name, **TINY, **({"in_chans": 2} if events else {}))
    if not events:
        return net, torch.rand(4, net.in_chans, 32, 32)
    model = torch.nn.Sequential(OrderedDict(time_first=TimeFirst(), net=net))
    return model, (torch.rand(4, TINY["T"], 2, 32, 32) > 0.7).float()


def test_tokens_fold_time_into_the_batch_on_a_square_grid():
    T, B, N, D = 2, 3, 16, 5
    x = torch.arange(T * B * N * D, dtype=torch.float32).reshape(T, B, N, D)
    maps = cam_reshape(x)
    assert maps.shape == (T * B, D, 4, 4)
    # token n sits at row n // 4, column n % 4 of the map of (t, b) = row t * B + b
    assert torch.equal(maps[1 * B + 2, :, 2, 3], x[1, 2, 2 * 4 + 3])
    feature_maps = torch.rand(T, B, 7, 4, 4)
    assert torch.equal(cam_reshape(feature_maps)[B + 1], feature_maps[1, 1])


def test_class_token_is_dropped_and_other_grids_refused():
    x = torch.rand(2, 1, 17, 4)  # 1 class token + 4x4 patches
    assert torch.equal(cam_reshape(x)[0, :, 0, 0], x[0, 0, 1])
    with pytest.raises(ValueError, match="square"):
        cam_reshape(torch.rand(2, 1, 12, 4))
    folded = torch.rand(6, 16, 5)  # [T*B, N, D] (or an ANN's [B, N, D])
    assert torch.equal(cam_reshape(folded)[5, :, 1, 2], folded[5, 6])
    with pytest.raises(ValueError, match=r"\[T, B, N, D\]"):
        cam_reshape(torch.rand(2, 3))


def test_methods_are_looked_up_by_name():
    assert {"gradcam", "gradcam++"} <= set(CAM_METHODS.names())
    with pytest.raises(UnknownNameError, match="gradcam"):
        CAM_METHODS.get("gradcan")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_trained_run_gives_one_non_constant_map_per_step(quick_run, method):
    config, model, bundle = quick_run
    images, labels, _ = load_images("val", bundle=bundle, max_images=4)
    with torch.no_grad():  # Grad-CAM turns gradients back on; the surrogate carries them
        result = time_gradcam(model, images, method=method)
        logits = model(images)
    T = config.model.T
    assert result.per_step.shape == (T, 4, 8, 8) and result.mean.shape == (4, 8, 8)
    assert np.isfinite(result.per_step).all()
    assert result.per_step.min() >= 0.0 and result.per_step.max() <= 1.0 + 1e-6
    assert result.targets == logits.argmax(-1).tolist()  # default: the predicted class
    assert (result.mean.std(axis=(1, 2)) > 0.05).all(), "a constant mean map"
    assert (result.per_step.std(axis=(2, 3)).max(axis=0) > 0.05).all()
    assert not model.training


def test_methods_and_targets_change_the_maps(quick_run):
    _, model, bundle = quick_run
    images, _, _ = load_images("val", bundle=bundle, max_images=2)
    plain = time_gradcam(model, images, method="gradcam")
    plus = time_gradcam(model, images, method="gradcam++")
    assert not np.allclose(plain.per_step, plus.per_step)
    other = [(t + 1) % 10 for t in plain.targets]
    explained = time_gradcam(model, images, targets=other)
    assert explained.targets == other
    assert not np.allclose(explained.mean, plain.mean)


def test_default_target_layer_is_the_models_own(quick_run):
    _, model, _ = quick_run
    assert find_target_layer(model) is model.net.blocks[-1].mlp.input
    with pytest.raises(ValueError, match="cam_target_layer"):
        find_target_layer(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", list_models())
def test_every_model_gets_maps_through_its_surrogate(name):
    net, x = tiny_model(name)
    calibrate_batchnorm(net, [x])  # untrained BatchNorm statistics leave the neurons silent
    result = time_gradcam(net, x[:2], method="gradcam")
    assert result.per_step.shape[1:] == (2, 32, 32)
    assert result.T == getattr(net, "T", 2) or result.T == 1  # 1: an ANN baseline
    assert np.isfinite(result.per_step).all() and result.per_step.max() <= 1.0 + 1e-6
    assert result.mean.std() > 0, f"{name}: every map is constant"


def test_overlays_are_written_per_image(quick_run, tmp_path):
    _, model, bundle = quick_run
    images, _, _ = load_images("val", bundle=bundle, max_images=2)
    result = time_gradcam(model, images, method="gradcam++")
    paths = save_overlays(result, images, tmp_path, names=["a.png", "b.png"], scale=4)
    assert [p.name for p in paths] == ["a_gradcampp.png", "b_gradcampp.png"]
    from PIL import Image

    strip = np.asarray(Image.open(paths[0]))
    assert strip.shape == (32, 32 * (result.T + 1), 3)  # T steps + the mean, 4x enlarged
    assert strip.std() > 0


def test_load_model_reads_bare_and_run_checkpoints(tmp_path):
    torch.manual_seed(0)
    kw = ["embed_dim=16", "depth=1", "num_heads=2", "img_size=8", "in_chans=1"]
    with pytest.warns(UserWarning, match="no checkpoint: its weights are random.*flat"):
        model = load_model("spikformer_4_384", overrides=kw, T=2)
    x = torch.rand(2, 1, 8, 8) * 4
    torch.save(model.net.state_dict(), tmp_path / "bare.pt")
    torch.save({"model": model.state_dict()}, tmp_path / "run.pt")
    for path in ("bare.pt", "run.pt"):
        torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
        loaded = load_model("spikformer_4_384", tmp_path / path, overrides=kw, T=2)
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="key=value"):
        load_model("spikformer_4_384", overrides=["embed_dim"])


def test_images_from_a_folder_and_from_a_run(quick_run):
    _, _, bundle = quick_run
    images, labels, names = load_images("val", bundle=bundle, max_images=3)
    assert images.shape == (3, 1, 8, 8) and len(labels) == 3 and names[0] == "val000"
    with pytest.raises(ValueError, match="needs a run"):
        load_images("val")
    if not CIFAR_SAMPLES.is_dir():
        pytest.skip(f"{CIFAR_SAMPLES} is absent")
    images, labels, names = load_images(CIFAR_SAMPLES, max_images=25, in_chans=3)
    assert images.shape == (25, 3, 32, 32) and 0 <= float(images.min()) < float(images.max()) <= 1
    assert names[0] == "cifar100_00_49.png" and labels[0] == 49
    # a 10-class model sees the CIFAR-10 samples, not CIFAR-100 labels it cannot output
    _, labels, names = load_images(CIFAR_SAMPLES, max_images=30, in_chans=3, num_classes=10)
    assert len(names) == 20 and all(n.startswith("cifar10_") for n in names)
    assert all(0 <= label < 10 for label in labels)
    _, _, names = load_images(CIFAR_SAMPLES, max_images=30, in_chans=3, num_classes=100)
    assert len(names) == 20 and all(n.startswith("cifar100_") for n in names)
    grey, _, _ = load_images(CIFAR_SAMPLES, max_images=1, in_chans=1, img_size=16)
    assert grey.shape == (1, 1, 16, 16)


def test_a_sample_folder_keeps_only_the_labels_a_model_can_output(tmp_path):
    from PIL import Image

    for name in ["cifar10_00_3.png", "cifar100_00_49.png", "cifar100_01_7.png", "other_5.png"]:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    _, labels, names = load_images(tmp_path, num_classes=10)
    assert names == ["cifar10_00_3.png"] and labels == [3]  # the set with 10 classes
    with pytest.raises(ValueError, match="none with the model's 7 classes"):
        load_images(tmp_path, num_classes=7)
    (tmp_path / "cifar10_00_3.png").unlink()
    (tmp_path / "cifar100_00_49.png").unlink()
    (tmp_path / "cifar100_01_7.png").unlink()
    with pytest.warns(UserWarning, match="left out 1 image"):
        with pytest.raises(ValueError, match="no image .* label below 3"):
            load_images(tmp_path, num_classes=3)


def test_event_frames_get_maps_and_overlays(tmp_path):
    model, x = tiny_model("spikformer_dvs_2_256")
    calibrate_batchnorm(model, [x])
    result = time_gradcam(model, x[:2])
    assert result.per_step.shape == (TINY["T"], 2, 32, 32) and result.mean.shape == (2, 32, 32)
    paths = save_overlays(result, x[:2], tmp_path)
    from PIL import Image

    strip = np.asarray(Image.open(paths[0]))
    assert strip.shape == (32, 32 * (TINY["T"] + 1), 3)
    assert strip[..., 0].std() > 0  # ON events drawn in red under the map

