"""The model contract, checked the same way for every registered architecture.

One row per model (tiny settings, the input it takes, the neurons whose threshold or type
the model itself fixes, its Grad-CAM target, how fast the quick preset starts to learn) gives
that model every shared test: each neuron type builds, runs and trains; a neuron swap
changes every neuron but the ones the model fixes; the configured surrogate reaches every
neuron; the CAM target is where the row says and a forward is a pure function of its input;
the quick preset's settings learn on real digits. A new model gets all of them by adding one
row (a test fails while a registered model class has none).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import pytest
import torch

from _zoo import (REPO, TINY, assert_every_parameter_learns, assert_quick_preset_trains, count,
                  quick_model_name, threshold)
from stlib.models import create_model, list_models
from stlib.models._registry import model_class
from stlib.neurons import NEURONS, neuron_factory, neurons_of

SWAPPED_THRESHOLD = 0.8  # inside (0, 1), so GLIF's sigmoid-parametrised threshold takes it too


@dataclass(frozen=True)
class Row:
    model: str
    kwargs: dict
    input_shape: tuple  # [T, B, C, H, W] (or [B, C, H, W] for direct encoding)
    cam: str  # the module cam_target_layer() returns, as a path with depth 1 / one block
    fixed: dict = field(default_factory=dict)  # neuron path pattern -> threshold the model keeps
    own_type: tuple = ()  # neuron path patterns that keep their own type on a swap
    quick: dict = field(default_factory=dict)  # steps / ratio of the quick-preset training
    spiking: bool = True
    train_first: bool = False  # the model adapts on its first training batch (firing rates)

    def __str__(self) -> str:
        return self.model


ATTN = {"*attn.attn_neuron": 0.5}  # the attention neuron's v_th is the model's (0.5)
POOL_LAST = dict(pool_stages=(False, False, False, True))  # 8x8 -> 4x4 tokens

ROWS = [
    Row("spikformer_4_384", {**TINY, **POOL_LAST}, (2, 3, 1, 8, 8), "blocks.0.mlp.input", ATTN),
    Row("spikformer_8_384", {**TINY, "img_size": 16}, (2, 2, 1, 16, 16), "blocks.0.mlp.input", ATTN),
    Row("tim_spikformer_2_256_dvs", {**TINY, "in_chans": 2, "T": 3}, (3, 2, 2, 8, 8),
        "blocks.0.mlp.input",
        {**ATTN, "*attn.tim.in_neuron": 0.3, "*attn.tim.out_neuron": 0.5}),
    Row("spikformer_semm_4_384", {**TINY, **POOL_LAST}, (2, 3, 1, 8, 8), "blocks.0.mlp.input",
        {"*attn.attn_neurons.*": 0.5}),
    Row("sdt_2_512", TINY, (2, 3, 1, 8, 8), "blocks.0.mlp.input", ATTN),
    Row("sdt_v2_15m_cifar", {**TINY, "last_dim": 24, "depth": 4, "strides": (1, 1, 2, 2, 1)},
        (2, 3, 1, 8, 8), "stage4", ATTN,
        quick=dict(ratio=0.99)),  # 28 neurons deep, a spiking head on 4 tokens: slow start
    Row("e_spikeformer_s_cifar", {**TINY, "last_dim": 24, "depth": 4, "strides": (1, 1, 2, 2, 1)},
        (2, 3, 1, 8, 8), "stage4", quick=dict(ratio=0.99)),  # MultiSpike, its own default
    Row("qsd_8_15m_cifar", {**TINY, "last_dim": 24, "depth": 4, "strides": (1, 1, 2, 2, 1)},
        (2, 3, 1, 8, 8), "stage4", quick=dict(ratio=0.99)),  # 4-bit weights, IE-LIF
    Row("spikingformer_4_384", TINY, (2, 3, 1, 8, 8), "blocks.0.mlp.input", ATTN),
    Row("qkformer_4_384", TINY, (2, 3, 1, 8, 8), "stages.2", ATTN,
        quick=dict(ratio=0.95)),  # 5 heavy stages: a slower start
    Row("qkformer_dvs_2_256", {**TINY, "img_size": 16, "in_chans": 2}, (2, 1, 2, 16, 16),
        "stages.1", ATTN,
        quick=dict(steps=12, ratio=0.95)),  # x8 then x2 leaves one token on 8x8 digits
    Row("sglformer_4_384", TINY, (2, 2, 1, 8, 8), "blocks.0.mlps.2.input",
        {"*attn.attn_neuron": 0.5, "*attns.*.attn_neuron": 0.5}),
    Row("spikingresformer_ti_cifar", TINY, (2, 2, 1, 8, 8), "stages.2", train_first=True),
    Row("swformer_4_384", TINY, (2, 2, 1, 8, 8), "blocks.0.mlp.input",
        {"*mixer.*wt.neurons.*": 1.0}, own_type=("*mixer.*wt.neurons.*",)),  # ternary NegIF
    Row("swformer_dvs_2_256", {**TINY, "in_chans": 2}, (2, 2, 2, 8, 8), "blocks.0.mlp.input",
        {"*mixer.*wt.neurons.*": 1.0}, own_type=("*mixer.*wt.neurons.*",)),  # the event mixer
    Row("mst_cifar10", {**TINY, "patch_size": 2, "depths": (2, 1), "num_heads": (1, 2), "window_size": 2},
        (2, 2, 1, 8, 8), "layers.1.blocks.0.mlp.input"),  # 4x4 patches: a shifted window, then 2x2
    Row("vit_4_384", TINY, (2, 2, 1, 8, 8), "blocks.0.mlp.0", spiking=False),
]
NEURON_TYPES = NEURONS.names()


def build(row: Row, neuron=None, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(row.model, neuron=neuron, **{**row.kwargs, **extra})


def fixed_threshold(row: Row, path: str) -> float | None:
    return next((v for pattern, v in row.fixed.items() if fnmatch.fnmatchcase(path, pattern)), None)


def test_every_model_class_has_a_row():
    covered = {model_class(row.model) for row in ROWS}
    missing = sorted({f"{model_class(m).__name__} ({m})" for m in list_models()
                      if model_class(m) not in covered})
    assert not missing, f"add a row to ROWS for {missing}"


@pytest.mark.parametrize("neuron", NEURON_TYPES)
@pytest.mark.parametrize("row", ROWS, ids=str)
def test_every_neuron_type_builds_runs_and_trains(row, neuron):
    model = build(row, neuron)
    if not row.spiking:  # the ANN baseline accepts a neuron and ignores it
        assert neurons_of(model) == [] and count(model) == count(build(row))
    assert_every_parameter_learns(model, torch.rand(row.input_shape) * 4, classes=3)


@pytest.mark.parametrize("neuron", NEURON_TYPES)
@pytest.mark.parametrize("row", [r for r in ROWS if r.spiking], ids=str)
def test_a_neuron_swap_changes_every_neuron_but_the_ones_the_model_fixes(row, neuron):
    factory = neuron_factory(neuron, T=row.kwargs["T"], v_threshold=SWAPPED_THRESHOLD)
    found = neurons_of(build(row, factory))
    assert found
    for path, module in found:
        expected = fixed_threshold(row, path)
        assert threshold(module) == pytest.approx(expected or SWAPPED_THRESHOLD), path
        if not any(fnmatch.fnmatchcase(path, p) for p in row.own_type):
            assert type(module) is NEURONS.get(neuron), path
    for pattern in row.fixed:  # every fixed neuron the row names exists
        assert any(fnmatch.fnmatchcase(path, pattern) for path, _ in found), pattern


@pytest.mark.parametrize("neuron", NEURON_TYPES)
@pytest.mark.parametrize("row", [r for r in ROWS if r.spiking], ids=str)
def test_configured_surrogate_and_alpha_reach_every_neuron(row, neuron):
    # the reference benchmark's bug: its surrogate setting never reached the neurons
    factory = neuron_factory(neuron, T=row.kwargs["T"], surrogate="atan", alpha=3.0)
    for path, module in neurons_of(build(row, factory)):
        if any(fnmatch.fnmatchcase(path, p) for p in row.own_type):
            continue
        assert type(module.surrogate).__name__ == "ATan" and module.surrogate.alpha == 3.0, path


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_cam_target_and_forward_purity(row):
    model = build(row)
    x = torch.rand(row.input_shape) * 3
    if row.train_first:
        model(x)  # one training batch sets what the model adapts
    model.eval()
    target = model.cam_target_layer()
    assert target is model.get_submodule(row.cam)
    seen = []
    handle = target.register_forward_hook(lambda module, args, out: seen.append(out))
    first = model(x)
    handle.remove()
    assert seen and torch.equal(first, model(x))  # neuron state is reset at every forward


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_quick_preset_builds_and_trains_on_digits(row):
    assert_quick_preset_trains(row.model, **{"steps": 6, "ratio": 0.92, **row.quick})


# statten/cifar10.yaml is an attention swap on SDT, with its own tests
CIFAR_RECIPES = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("params/*/cifar10.yaml")
                       if p.parent.name != "statten")


@pytest.mark.parametrize("recipe", CIFAR_RECIPES)
def test_the_quick_preset_on_each_cifar_recipe_builds_a_row_of_this_contract(recipe):
    assert quick_model_name(recipe) in {row.model for row in ROWS}
