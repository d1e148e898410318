"""Reference neurons (hand-computed traces, gradients through T, dtype and state contract) and
the neuron registry / factories. Parametrized over ``NEURONS`` so a new neuron is covered."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call

from stlib.neurons import (CLIF, GLIF, KLIF, LIF, NEURONS, PLIF, QCFS, SURROGATES, BaseNeuron,
                           ConvertedIF, IFHard, IFSoft, MultiSpike, convert_to_snn, create_neuron,
                           is_neuron, neuron_factory, neurons_of)
from stlib.neurons.surrogate import Sigmoid
from stlib.registry import UnknownNameError

NAMES = NEURONS.names()
CANONICAL = {"LIF": LIF, "IF": IFHard, "IFSoft": IFSoft, "PLIF": PLIF, "CLIF": CLIF, "GLIF": GLIF,
             "KLIF": KLIF, "MultiSpike": MultiSpike, "QCFS": QCFS}
ALIASES = {"lif": LIF, "if": IFHard, "IFHard": IFHard, "if_hard": IFHard, "IF_hard": IFHard,
           "ifsoft": IFSoft, "if_soft": IFSoft, "IF_soft": IFSoft, "plif": PLIF, "clif": CLIF,
           "glif": GLIF, "klif": KLIF, "multispike": MultiSpike, "multi_spike": MultiSpike,
           "qcfs": QCFS}
STATELESS = {n for n in NAMES if NEURONS.get(n).stateless}  # MultiSpike, QCFS: no state over T
#: the output levels of the multi-level neurons at their defaults
LEVELS = {"MultiSpike": [k / 4 for k in range(5)], "QCFS": [2 * k / 16 for k in range(17)]}


def build(name: str, T: int = 4, **settings) -> BaseNeuron:
    return create_neuron(name, T=T, **settings)


def threshold(neuron: BaseNeuron) -> float:
    """``v_threshold`` as a float (GLIF's is a tensor property)."""
    return float(torch.as_tensor(neuron.v_threshold).detach())


def with_k(neuron: KLIF, k: float) -> KLIF:
    with torch.no_grad():
        neuron.k.fill_(k)
    return neuron


# --------------------------------------------------------------------------- traces
# (id, builder, X, spikes, H_t (pre-reset potential, v_seq), V after the last step, atol).
# Every number was worked out by hand from the NEURONS.md formulas (CLIF/GLIF with a
# calculator); tau 2 keeps the LIF-family arithmetic exact in binary.
TRACES = [
    # LIF tau 2: H = V/2 + X/2. t0: X = 2 -> H = 1.0 == v_th: the tie fires.
    ("lif_tie", lambda: LIF(), [2.0, 1.0, 1.5, 0.5, 3.0],
     [1, 0, 1, 0, 1], [1.0, 0.5, 1.0, 0.25, 1.625], 0.0, 0.0),
    ("lif_hard", lambda: LIF(), [3.0, 1.0, 0.0, 2.0],
     [1, 0, 0, 1], [1.5, 0.5, 0.25, 1.125], 0.0, 0.0),
    # soft: V = H - 1 after a spike, V0 = 0
    ("lif_soft", lambda: LIF(v_reset=None), [3.0, 1.0, 0.0, 2.0],
     [1, 0, 0, 1], [1.5, 0.75, 0.375, 1.1875], 0.1875, 0.0),
    # decay_input False: H = V/2 + X
    ("lif_no_decay_input", lambda: LIF(decay_input=False), [0.5, 0.75, 0.25, 1.0],
     [0, 1, 0, 1], [0.5, 1.0, 0.25, 1.125], 0.0, 0.0),
    # V0 = V_r = -0.5: H = V + (X - (V + 0.5))/2, reset to -0.5
    ("lif_v_reset", lambda: LIF(v_reset=-0.5), [3.0, 0.0, 2.0, 2.5],
     [1, 0, 0, 1], [1.0, -0.5, 0.5, 1.25], -0.5, 0.0),
    # decay_input False with V_r = -0.5: H = V - (V + 0.5)/2 + X, V0 = -0.5
    ("lif_no_decay_input_v_reset", lambda: LIF(decay_input=False, v_reset=-0.5), [1.5, 0.5, 1.0],
     [1, 0, 0], [1.0, 0.0, 0.75], 0.75, 0.0),
    ("lif_tau4", lambda: LIF(tau=4.0), [2.0, 2.0, 2.0],
     [0, 0, 1], [0.5, 0.875, 1.15625], 0.0, 0.0),
    ("if_hard", lambda: IFHard(), [0.5, 0.5, 0.75, 1.5, 0.0],
     [0, 1, 0, 1, 0], [0.5, 1.0, 0.75, 2.25, 0.0], 0.0, 0.0),
    ("if_soft", lambda: IFSoft(), [0.5, 0.5, 0.75, 1.5, 0.0],
     [0, 1, 0, 1, 1], [0.5, 1.0, 0.75, 2.25, 1.25], 0.25, 0.0),
    # PLIF init_tau 2: sigmoid(0) = 1/2 exactly, so it is LIF tau 2 bit for bit
    ("plif_equals_lif", lambda: PLIF(), [2.0, 1.0, 1.5, 0.5, 3.0],
     [1, 0, 1, 0, 1], [1.0, 0.5, 1.0, 0.25, 1.625], 0.0, 0.0),
    ("plif_no_decay_input", lambda: PLIF(decay_input=False), [0.5, 0.75, 0.25, 1.0],
     [0, 1, 0, 1], [0.5, 1.0, 0.25, 1.125], 0.0, 0.0),
    ("plif_v_reset", lambda: PLIF(v_reset=-0.5), [3.0, 0.0, 2.0, 2.5],
     [1, 0, 0, 1], [1.0, -0.5, 0.5, 1.25], -0.5, 0.0),
    ("plif_no_decay_input_v_reset", lambda: PLIF(decay_input=False, v_reset=-0.5), [1.5, 0.5, 1.0],
     [1, 0, 0], [1.0, 0.0, 0.75], 0.75, 0.0),
    # init_tau 4: w = -ln 3, sigmoid(w) = 1/4 (float32 rounding -> atol)
    ("plif_init_tau4", lambda: PLIF(init_tau=4.0), [2.0, 2.0, 2.0],
     [0, 0, 1], [0.5, 0.875, 1.15625], 0.0, 1e-6),
    # CLIF tau 2: H = V/2 + X; M' = M sig(H/2); M = M' + S; V = H - S (1 + sig(M)).
    # t0: H = 1.5 fires, M = 1, V = 0.5 - sig(1) = -0.2310585786; t1: H = 0.3844707107 ...
    ("clif", lambda: CLIF(), [1.5, 0.5, 1.0, 1.2, 0.25],
     [1, 0, 1, 0, 0], [1.5, 0.3844707106849976, 1.1922353553424987, 0.8987853691571908, 0.6993926845785954],
     0.6993926845785954, 1e-6),
    # GLIF T=4, initial values: gates 1/2, tau 1/4, th 1/2, leak th/(2T) = 1/16, V_sub 1/2, C 1/2:
    # I = 0.75 X; V = 0.625 V (1 - S/2) - 1/32 + I - S/4 (S the previous spike)
    ("glif", lambda: GLIF(4), [1.0, 0.2, 0.9, 0.5],
     [1, 0, 1, 0], [0.71875, 0.093359375, 0.702099609375, 0.3131561279296875], 0.3131561279296875, 1e-6),
    # GLIF tie: leak 1/8 -> V0 = 0.75 * 0.75 - 1/16 = 0.5 == th fires; V1 = 0.15625 - 1/16 - 1/4
    ("glif_tie", lambda: GLIF(2, leak=0.125), [0.75, 0.0],
     [1, 0], [0.5, -0.15625], -0.15625, 0.0),
    # KLIF k = 1 on non-negative H: ReLU is the identity, so it is LIF
    ("klif_k1_equals_lif", lambda: KLIF(), [2.0, 1.0, 1.5, 0.5, 3.0],
     [1, 0, 1, 0, 1], [1.0, 0.5, 1.0, 0.25, 1.625], 0.0, 0.0),
    # k = 2: F = ReLU(2H), fire on F (t0: F = 1.0 tie), reset on F; t2: H = -0.25 -> F = 0
    ("klif_k2", lambda: with_k(KLIF(), 2.0), [1.0, 0.5, -1.0, 1.0],
     [1, 0, 0, 1], [1.0, 0.5, 0.0, 1.0], 0.0, 0.0),
    ("klif_k2_soft", lambda: with_k(KLIF(v_reset=None), 2.0), [1.5, 0.5, 0.0],
     [1, 1, 0], [1.5, 1.0, 0.0], 0.0, 0.0),
    # scale_reset: V = F/k - (th/k) S (soft) or (F/k)(1 - S) + V_r S (hard)
    ("klif_k2_scale_soft", lambda: with_k(KLIF(v_reset=None, scale_reset=True), 2.0), [1.5, 0.5, 0.0],
     [1, 0, 0], [1.5, 0.75, 0.375], 0.1875, 0.0),
    ("klif_k2_scale_hard", lambda: with_k(KLIF(scale_reset=True), 2.0), [1.5, 0.5, 0.0],
     [1, 0, 0], [1.5, 0.5, 0.25], 0.125, 0.0),
]


@pytest.mark.parametrize("case", TRACES, ids=[c[0] for c in TRACES])
def test_hand_computed_trace(case):
    _, make, xs, spikes, h, v_last, atol = case
    neuron = make()
    neuron.store_v_seq = True
    x = torch.tensor(xs).reshape(-1, 1)  # [T, 1]
    s = neuron(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert s.flatten().tolist() == spikes
    assert neuron.v_seq.shape == x.shape
    expected_h = torch.tensor(h)
    expected_v = torch.tensor([v_last])
    if atol == 0.0:
        assert torch.equal(neuron.v_seq.flatten(), expected_h), neuron.v_seq.flatten().tolist()
        assert torch.equal(neuron.v, expected_v), neuron.v.tolist()
    else:
        assert torch.allclose(neuron.v_seq.flatten(), expected_h, atol=atol, rtol=0), neuron.v_seq.flatten().tolist()
        assert torch.allclose(neuron.v, expected_v, atol=atol, rtol=0), neuron.v.tolist()


def test_multispike_is_the_official_integer_activation_with_a_straight_through_gradient():
    # E-SpikeFormer's MultiSpike: round(clamp(x, 0, 4)) / 4; backward 1/4 inside (0, 4), else 0
    x = torch.tensor([[-0.7, 0.2, 0.49, 0.51, 1.3, 2.5, 3.6, 4.2, 9.0]], requires_grad=True)
    out = MultiSpike()(x)
    assert out.tolist() == [[0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 1.0, 1.0]]  # 2.5 -> 2 (half to even)
    out.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.0, 0.0]]
    head = MultiSpike(norm=1.0)(x.detach())  # the head neuron: integer counts
    assert head.tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 4.0, 4.0, 4.0]]
    eight = MultiSpike(v_threshold=0.5, max_spikes=8)(x.detach())  # levels every 0.5, up to 8
    assert eight.tolist() == [[0.0, 0.0, 0.125, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0]]
    # another surrogate reaches every step: atan's slope is nonzero outside (0, 4) too
    y = x.detach().clone().requires_grad_()
    MultiSpike(surrogate="atan")(y).sum().backward()
    assert y.grad[0, 0] > 0 and y.grad[0, -1] > 0


@pytest.mark.parametrize("setting", [{"max_spikes": 0}, {"max_spikes": 2.5}, {"v_threshold": 0.0},
                                     {"norm": -1.0}])
def test_multispike_refuses_bad_settings(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        MultiSpike(**setting)


def _official_qcfs(x: torch.Tensor, lam: torch.Tensor, levels: int) -> torch.Tensor:
    """MST's MyFloor as its authors trained it: a straight-through floor, and clamp passing
    the gradient at its bounds (torch's clamp did until 2026; it gives 0 there now)."""
    z = x / lam * levels + 0.5
    w = (z.floor() + (z - z.detach())) / levels
    inside = ((w >= 0) & (w <= 1)).to(x.dtype)
    w = w.detach().clamp(0, 1) + (w - w.detach()) * inside
    return w * lam


def test_qcfs_is_the_official_activation_with_its_straight_through_gradients():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 4000, generator=g, dtype=torch.float64) * 2).requires_grad_()
    neuron = QCFS(v_threshold=1.5, levels=16).double()
    lam = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    xx = x.detach().clone().requires_grad_()
    y, ref = neuron(x), _official_qcfs(xx, lam, 16)
    assert torch.equal(y, ref)  # the same bits: levels {0, lam/16, ..., lam}
    assert len(y.unique()) == 17
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, xx.grad)  # 1 on z in [-1/2, L + 1/2), else 0
    slope = x.grad / w
    window = (x.detach() / 1.5 * 16 >= -0.5) & (x.detach() / 1.5 * 16 < 16.5)
    assert torch.equal(slope == 0, ~window) and torch.allclose(slope[window], torch.ones((), dtype=torch.float64))
    torch.testing.assert_close(neuron.threshold.grad, lam.grad)  # the clip learns as it did


def test_converted_if_averages_to_qcfs_with_as_many_levels_as_steps():
    # constant input over T steps: the mean output of the IF neuron (V_0 = 1/2, soft reset)
    # is QCFS with L = T, the equivalence ANN-to-SNN conversion rests on (Bu et al. Thm 2)
    x = torch.linspace(-0.5, 3.0, 701, dtype=torch.float64).unsqueeze(0)
    for T in (4, 16):
        spikes = ConvertedIF(2.0)(x.expand(T, -1))
        assert set(spikes.unique().tolist()) == {0.0, 2.0}  # spikes carry the clip
        torch.testing.assert_close(spikes.mean(0, keepdim=True), QCFS(2.0, levels=T).double()(x))


def test_convert_to_snn_swaps_every_qcfs_and_keeps_the_ann():
    ann = nn.Sequential(nn.Linear(4, 8), QCFS(1.5), nn.Linear(8, 2), QCFS(0.75)).eval()
    with torch.no_grad():
        ann[3].threshold.fill_(0.5)  # a learned clip
    snn = convert_to_snn(ann)
    assert [type(m) for _, m in neurons_of(snn)] == [ConvertedIF, ConvertedIF]
    assert [m.scale for _, m in neurons_of(snn)] == [1.5, 0.5]
    assert [type(m) for _, m in neurons_of(ann)] == [QCFS, QCFS]
    assert not snn.training
    with pytest.raises(ValueError, match="no T to set"):  # a T no module would read
        convert_to_snn(ann, T=8)
    ann.T = 1  # a model that repeats its input T times (the model zoo's)
    assert convert_to_snn(ann, T=8).T == 8 and ann.T == 1
    with pytest.raises(ValueError, match="no QCFS activation to convert"):
        convert_to_snn(nn.Sequential(nn.Linear(2, 2), LIF()))
    with pytest.raises(ValueError, match="positive number of simulation steps"):
        convert_to_snn(ann, T=0)


@pytest.mark.parametrize("setting", [{"levels": 0}, {"levels": 2.5}, {"v_threshold": 0.0}])
def test_qcfs_refuses_bad_settings(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        QCFS(**setting)


def test_clif_complementary_potential_track():
    neuron = CLIF(store_v_seq=True)
    neuron(torch.tensor([1.5, 0.5, 1.0, 1.2, 0.25]).reshape(-1, 1))
    # M_t = M_{t-1} sig(H_t / 2) + S_t, by hand from the H trace above
    expected = torch.tensor([1.0, 0.5479113847960015, 1.3532755034491495, 0.8261676978364378, 0.48458365723183994])
    assert torch.allclose(neuron.m_seq.flatten(), expected, atol=1e-6, rtol=0)
    assert torch.allclose(neuron.m.flatten(), expected[-1:], atol=1e-6, rtol=0)


def test_glif_initial_values_are_exact():
    g = GLIF(4)
    with torch.no_grad():
        assert g.v_threshold.item() == 0.5 and threshold(g) == 0.5
        assert [g.gate_alpha.item(), g.gate_beta.item(), g.gate_gamma.item()] == [0.5, 0.5, 0.5]
        assert g.tau.item() == 0.25 and g.leak.item() == 0.0625 and g.v_subreset.item() == 0.5
        assert g.conduct.tolist() == [0.5] * 4
    g3 = GLIF(3, v_threshold=0.3, tau=0.4, leak=0.01, v_subreset=0.2, conduct=0.7)
    values = [g3.v_threshold, g3.tau, g3.leak, g3.v_subreset, g3.conduct[0]]
    assert [v.detach().item() for v in values] == pytest.approx([0.3, 0.4, 0.01, 0.2, 0.7], abs=1e-7)
    assert GLIF(8, v_threshold=0.4).leak.detach().item() == pytest.approx(0.4 / 16, abs=1e-8)


def test_glif_refuses_another_T_and_values_outside_0_1():
    with pytest.raises(ValueError, match=r"T=4.*T=3"):
        GLIF(4)(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="v_threshold"):
        GLIF(4, v_threshold=1.2)
    with pytest.raises(ValueError, match="tau"):
        GLIF(4, tau=1.0)
    with pytest.raises(ValueError, match="T"):
        GLIF(0)


@pytest.mark.parametrize("cls,name", [(LIF, "tau"), (PLIF, "init_tau"), (KLIF, "tau"), (CLIF, "tau")])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_tau_must_exceed_one(cls, name, tau):
    with pytest.raises(ValueError, match=rf"{name}.*{tau}"):
        cls(**{name: tau})


def test_if_hard_refuses_a_soft_reset():
    with pytest.raises(ValueError, match="IFSoft"):
        IFHard(v_reset=None)


@pytest.mark.parametrize("name", NAMES)
def test_a_misspelt_keyword_is_a_type_error(name):
    cls = NEURONS.get(name)
    args = (3,) if cls.requires_T else ()
    with pytest.raises(TypeError):
        cls(*args, v_treshold=0.5)


# ---------------------------------------------------------------- contract, every neuron
def _input(T: int = 4, *shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, *(shape or (2, 3, 5)), generator=g) * 0.8 + 0.5


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_binary_and_state(name):
    neuron = build(name, store_v_seq=True)
    x = _input(4, 2, 3, 5)
    s = neuron(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    if name in STATELESS:  # multi-level (MultiSpike: counts 0..4 over 4), several levels occur
        assert set(s.unique().tolist()) <= set(LEVELS[name]) and len(s.unique()) >= 3
    else:
        assert set(s.unique().tolist()) == {0.0, 1.0}  # binary, and the input does make it fire
    assert neuron.v.shape == x.shape[1:] and neuron.v_seq.shape == x.shape
    assert not neuron.v.requires_grad
    neuron.store_v_seq = False
    neuron(x)
    assert neuron.v_seq is None


@pytest.mark.parametrize("name", NAMES)
def test_state_starts_fresh_every_call(name):
    neuron = build(name, store_v_seq=True)
    x = _input(4, 64, seed=1) + 0.3
    first, h_first = neuron(x), neuron.v_seq
    second, h_second = neuron(x), neuron.v_seq
    assert torch.equal(first, second) and torch.equal(h_first, h_second)
    # the check can fail: a run that carries the state on into a second copy of x differs
    continued = build(name, T=8)(torch.cat([x, x]))[4:]
    # a stateless neuron gives the same steps either way; any other must differ
    assert torch.equal(continued, first) == (name in STATELESS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_gives_half_spikes_equal_to_float32(name, dtype):
    neuron = build(name, store_v_seq=True)
    x = _input(4, 8, 16).to(dtype)
    s = neuron(x)
    assert s.dtype == dtype
    assert neuron.v.dtype == torch.float32 and neuron.v_seq.dtype == torch.float32  # state math in fp32
    ref = neuron(x.float())
    assert torch.equal(s.float(), ref)


@pytest.mark.parametrize("name", NAMES)
def test_input_is_checked(name):
    neuron = build(name)
    with pytest.raises(TypeError, match="floating"):
        neuron(torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="T >= 1"):
        neuron(torch.ones(0, 2))


# ------------------------------------------------------------------- gradients through T
@pytest.mark.parametrize("surrogate", SURROGATES.names())
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_bptt_in_smooth_mode(name, surrogate):
    """float64, surrogate.spiking=False: the whole BPTT chain (charge, fire, reset, parameters)
    against finite differences."""
    neuron = build(name, T=3, surrogate=surrogate).double()
    neuron.surrogate.spiking = False
    names = [n for n, _ in neuron.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in neuron.named_parameters()]
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 2, generator=g, dtype=torch.float64) * 1.2).requires_grad_()

    def run(x, *ps):
        return functional_call(neuron, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5)
    # the check is not vacuous: later outputs depend on the first input through the state
    (grad_x,) = torch.autograd.grad(run(x, *params)[1:].sum(), x)
    assert (grad_x[0].abs().sum() > 0) == (name not in STATELESS)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_temporal_gradient_with_spikes(detach_reset):
    neuron = LIF(detach_reset=detach_reset)
    x = torch.tensor([[1.5], [0.4], [0.9]], requires_grad=True)  # fires at t0, then builds up
    neuron(x)[-1].sum().backward()
    assert x.grad[0].item() != 0.0  # S_2 depends on X_0 through V


def test_detach_reset_changes_only_the_gradient():
    x = torch.tensor([[1.5], [0.4], [0.9]])
    grads, outs = [], []
    for detach in (False, True):
        xx = x.clone().requires_grad_()
        out = LIF(detach_reset=detach)(xx)
        out[-1].sum().backward()
        grads.append(xx.grad[0].item())
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    assert grads[0] != grads[1]


@pytest.mark.parametrize("name", NAMES)
def test_temporal_path_exists_for_every_neuron(name):
    neuron = build(name, T=3, surrogate="sigmoid")
    x = torch.tensor([[1.5], [0.4], [0.9]], requires_grad=True)
    neuron(x)[-1].sum().backward()
    assert (x.grad[0].item() != 0.0) == (name not in STATELESS)  # none without a state


LEARNABLE = {"PLIF": ["w"], "KLIF": ["k"],
             "GLIF": ["alpha_raw", "beta_raw", "conduct_raw", "gamma_raw", "leak_raw", "tau_raw",
                      "threshold_raw", "v_subreset_raw"],
             "QCFS": ["threshold"]}


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    neuron = build(name, T=4)
    assert sorted(n for n, _ in neuron.named_parameters()) == LEARNABLE.get(name, [])
    x = _input(4, 256, seed=2).requires_grad_()
    out = neuron(x)
    (out * torch.linspace(0.5, 1.5, 256)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in neuron.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert (p.grad != 0).all(), pname


# ----------------------------------------------------------------------------- registry
def test_canonical_names():
    assert set(NAMES) == set(CANONICAL)


@pytest.mark.parametrize("name", sorted({*CANONICAL, *ALIASES}))
def test_every_name_and_alias_builds(name):
    expected = {**CANONICAL, **ALIASES}[name]
    assert NEURONS.get(name) is expected
    neuron = create_neuron(name, T=3)
    assert type(neuron) is expected and is_neuron(neuron)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        create_neuron("LIFF")
    msg = str(err.value)
    assert "'LIFF'" in msg and "did you mean 'LIF'" in msg and "valid:" in msg
    assert all(n in msg for n in CANONICAL)
    with pytest.raises(UnknownNameError):
        neuron_factory("LIFF")


def test_bad_setting_names_key_neuron_and_valid_keys():
    with pytest.raises(ValueError) as err:
        create_neuron("IF", tau=2.0)
    msg = str(err.value)
    assert "neuron 'IF' has no setting 'tau'" in msg
    assert "valid: alpha, detach_reset, store_v_seq, surrogate, v_reset, v_threshold" in msg
    with pytest.raises(ValueError, match="'v_treshold'"):
        create_neuron("GLIF", T=4, v_treshold=0.5)
    with pytest.raises(ValueError, match="GLIF needs T"):
        create_neuron("glif")


def test_none_settings_keep_the_class_default_and_soft_spells_soft_reset():
    lif = create_neuron("LIF", tau=None, v_threshold=None, v_reset=None, surrogate=None, alpha=None)
    assert (lif.tau, lif.v_threshold, lif.v_reset) == (2.0, 1.0, 0.0)
    assert type(lif.surrogate).__name__ == "Sigmoid" and lif.surrogate.alpha == 4.0
    assert create_neuron("LIF", v_reset="soft").v_reset is None
    assert create_neuron("KLIF", v_reset="SOFT").v_reset is None
    assert create_neuron("LIF", T=7).tau == 2.0  # T goes only to neurons that need it


DEFAULT_SURROGATES = {"LIF": ("Sigmoid", 4.0), "IF": ("Sigmoid", 4.0), "IFSoft": ("Sigmoid", 4.0),
                      "PLIF": ("Sigmoid", 4.0), "KLIF": ("Sigmoid", 4.0), "CLIF": ("Rectangle", 1.0),
                      "GLIF": ("Rectangle", 1.0), "MultiSpike": ("Rectangle", 1.0),
                      "QCFS": ("Rectangle", 1.0)}


@pytest.mark.parametrize("name", NAMES)
def test_default_surrogate(name):
    neuron = build(name)
    assert (type(neuron.surrogate).__name__, neuron.surrogate.alpha) == DEFAULT_SURROGATES[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("surrogate,cls_name", [("atan", "ATan"), ("triangle", "Triangle"), ("sigmoid", "Sigmoid")])
def test_surrogate_and_alpha_settings_reach_the_neuron(name, surrogate, cls_name):
    neuron = build(name, surrogate=surrogate, alpha=3.0)
    assert type(neuron.surrogate).__name__ == cls_name and neuron.surrogate.alpha == 3.0
    factory = neuron_factory(name, T=4, surrogate=surrogate, alpha=3.0)
    built = factory()
    assert type(built.surrogate).__name__ == cls_name and built.surrogate.alpha == 3.0
    assert "alpha=3.0" in repr(built)


# GLIF's threshold is sigmoid(raw), so it lives in (0, 1): 1.2 cannot be a GLIF setting.
CONFIGURED_THRESHOLD = {"GLIF": 0.8}


@pytest.mark.parametrize("name", NAMES)
def test_factory_site_override_wins(name):
    configured = CONFIGURED_THRESHOLD.get(name, 1.2)
    factory = neuron_factory(name, T=4, v_threshold=configured)
    assert threshold(factory()) == pytest.approx(configured, abs=1e-7)
    assert threshold(factory(v_threshold=0.5)) == 0.5
    assert threshold(factory(v_threshold=None)) == pytest.approx(configured, abs=1e-7)
    assert factory.settings == {"v_threshold": configured} and factory.name == name


def test_glif_factory_refuses_a_threshold_above_one_eagerly():
    with pytest.raises(ValueError, match="v_threshold"):
        neuron_factory("GLIF", T=4, v_threshold=1.2)


def test_factory_is_eager_picklable_and_readable():
    factory = neuron_factory("lif", tau=3.0, detach_reset=True, alpha=None)
    assert factory.name == "LIF" and factory.settings == {"tau": 3.0, "detach_reset": True}
    assert repr(factory) == "NeuronFactory('LIF', tau=3.0, detach_reset=True)"
    clone = pickle.loads(pickle.dumps(factory))
    assert clone == factory
    neuron = clone(v_threshold=0.5)
    assert (neuron.tau, neuron.detach_reset, neuron.v_threshold) == (3.0, True, 0.5)
    assert factory() is not factory()
    assert "T=4" in repr(neuron_factory("GLIF", T=4))
    with pytest.raises(ValueError, match="'taus'"):
        neuron_factory("LIF", taus=2.0)
    with pytest.raises(ValueError, match="tau"):
        neuron_factory("LIF", tau=0.5)
    with pytest.raises(ValueError, match="GLIF needs T"):
        neuron_factory("GLIF")
    assert neuron_factory("GLIF", T=4)(T=6).T == 6


def test_factory_gives_each_neuron_its_own_surrogate_module():
    factory = neuron_factory("LIF", surrogate=Sigmoid(alpha=2.0))
    a, b = factory(), factory(alpha=5.0)
    assert a.surrogate is not b.surrogate
    assert (a.surrogate.alpha, b.surrogate.alpha, factory.settings["surrogate"].alpha) == (2.0, 5.0, 2.0)


def test_neurons_of_and_is_neuron():
    model = nn.Sequential(nn.Linear(2, 2), LIF(), nn.Sequential(nn.ReLU(), GLIF(4)))
    found = neurons_of(model)
    assert [n for n, _ in found] == ["1", "2.1"]
    assert [type(m) for _, m in found] == [LIF, GLIF]
    assert not is_neuron(model[0]) and is_neuron(model[1])


@pytest.mark.parametrize("name", NAMES)
def test_repr_shows_what_arrived(name):
    if name == "QCFS":  # no reset to show
        text = repr(build(name, v_threshold=0.25, levels=8))
        assert "v_threshold=0.25" in text and "levels=8" in text
        return
    if name in STATELESS:
        text = repr(build(name, v_threshold=0.25, max_spikes=8))
        assert "v_threshold=0.25" in text and "max_spikes=8" in text and "norm=8" in text
        return
    neuron = build(name, v_threshold=0.25, detach_reset=True)
    text = repr(neuron)
    assert "v_threshold=0.25" in text and "detach_reset=True" in text and "v_reset=" in text
    assert f"alpha={neuron.surrogate.alpha}" in text
    if hasattr(neuron, "decay_input") or name == "CLIF":
        assert "decay_input=" in text
    if name in ("LIF", "KLIF", "CLIF"):
        assert "tau=2.0" in text
