"""``torch.compile``: neurons trace to one graph and equal eager; ``train.compile`` is safe.

The Inductor tests compile small neurons for real (a few seconds each on a CPU). The training
test runs Dynamo and AOTAutograd with the ``aot_eager`` backend, which checks the same trace,
partition and state handling without generating C++ (Inductor on a whole model takes about a
minute on 2 cores; ``python -m stlib.bench compile`` measures that path).
"""
from __future__ import annotations

import pytest
import torch

import stlib
from stlib import build
from stlib.neurons import NEURONS, create_neuron, kernels

SETTINGS = {"CLIF": {}, "GLIF": {"surrogate": "sigmoid"}, "MultiSpike": {}, "QCFS": {}}


def _neuron(name: str, T: int):
    return create_neuron(name, T=T, **SETTINGS.get(name, {"detach_reset": True}))


@pytest.mark.slow
@pytest.mark.parametrize("name", NEURONS.names())
def test_compiled_neuron_is_one_graph_and_equals_eager(name):
    torch._dynamo.reset()
    T = 3
    x0 = torch.randn(T, 2, 5, 7) + 0.6
    eager, compiled_neuron = _neuron(name, T), _neuron(name, T)
    compiled_neuron.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_neuron, fullgraph=True)  # a graph break fails here
    outs, grads = [], []
    for fn in (eager, compiled):
        x = x0.clone().requires_grad_()
        spikes = fn(x)
        (spikes * torch.linspace(-1, 1, spikes.numel()).reshape(spikes.shape)).sum().backward()
        outs.append(spikes.detach())
        grads.append(x.grad)
    assert outs[0].sum() > 0 and torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    for p_eager, p_compiled in zip(eager.parameters(), compiled_neuron.parameters()):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-5)


def test_under_the_compiler_auto_takes_the_traced_loop_not_the_fused_function(monkeypatch):
    torch._dynamo.reset()
    neuron = _neuron("LIF", 2)
    x = torch.randn(2, 64) + 0.6
    assert kernels.select(neuron, x) is kernels.run_torch  # eager CPU: the fused function

    def refuse(*args):
        raise AssertionError("the fused torch function was traced")

    monkeypatch.setattr(kernels, "run_torch", refuse)
    out = torch.compile(neuron, backend="eager", fullgraph=True)(x)
    monkeypatch.undo()
    assert torch.equal(out, _neuron("LIF", 2)(x))


def test_train_compile_trains_and_saves_what_eager_loads(tmp_path, monkeypatch):
    torch._dynamo.reset()
    calls, real_compile = [], torch.compile

    def aot_eager(model, **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", aot_eager)
    settings = ["train.epochs=1", "train.progress=false", "model.T=2", "model.kwargs.embed_dim=16",
                "model.kwargs.num_heads=2"]

    def config(name: str, *extra: str):
        return stlib.load_params("params/spikformer/cifar10.yaml", preset="quick", overrides=[
            f"experiment.output_dir={tmp_path / name}", *settings, *extra])

    compiled_config = config("compiled", "train.compile=true")
    assert compiled_config.config_hash == config("eager").config_hash  # same computation
    compiled = stlib.fit(compiled_config)
    assert calls == ["Sequential"]
    state = torch.load(compiled.run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["model"] and not [k for k in state["model"] if "_orig_mod" in k]
    from stlib.analysis.gradcam import load_run

    _, model, _ = load_run(compiled.run_dir, checkpoint="last")  # the plain network loads the compiled run's weights
    assert torch.equal(model.state_dict()[next(iter(state["model"]))], next(iter(state["model"].values())))
    eager = stlib.fit(config("eager"))
    assert compiled.metrics[0]["train_loss"] == pytest.approx(eager.metrics[0]["train_loss"], rel=1e-3)


def test_compile_off_or_unsupported_returns_the_module_itself(monkeypatch):
    model = torch.nn.Linear(2, 2)
    assert build.compile_model(model, False) is model
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="torch.compile is not supported.*running eagerly"):
        assert build.compile_model(model, True) is model
