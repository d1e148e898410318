"""Meta-transformer ablation switches (stlib.layers.ablation, stlib.models.ablation) on the Spikformer and SDT hosts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stlib.layers.ablation import EMBEDDINGS
from stlib.models.ablation import ablation_kwargs, component_labels
from stlib.models import create_model
from stlib.registry import UnknownNameError

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=32, depth=1, num_heads=2, img_size=8, in_chans=1, num_classes=4, T=2)
HOSTS = {"spikformer_4_384": ("ssa", "random_ssa"), "sdt_2_512": ("sdsa", "random_sdsa")}
SEMM = "spikformer_semm_4_384"
VIT = "vit_4_384"


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize("embedding", ["native", "sps_2conv", "sps_1conv"])
@pytest.mark.parametrize("model, attention", [
    *((m, a) for m in (*HOSTS, SEMM) for a in ("native", "random_attn", "sdsa_3")),
    *((VIT, a) for a in ("native", "random_attn"))])  # no spiking attention on the ANN
def test_every_switch_builds_and_trains_on_every_host(model, attention, embedding):
    net = create_model(model, **TINY, **ablation_kwargs(model, attention, embedding))
    out = net(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 4)
    out.sum().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_defaults_keep_the_published_parameter_counts():
    assert _count(create_model("spikformer_4_384")) == 9_324_730
    assert _count(create_model("sdt_2_512")) == 10_233_418
    assert _count(create_model("spikformer_4_384", embed="sps")) == 9_324_730


@pytest.mark.parametrize("model", list(HOSTS))
def test_random_attn_freezes_exactly_the_qk_projections(model):
    torch.manual_seed(0)
    net = create_model(model, **TINY, attn=HOSTS[model][1])
    attn = net.blocks[0].attn
    frozen = {id(p) for proj in (attn.q, attn.k) for p in proj.linear.parameters()}
    names = {n for n, p in net.named_parameters() if id(p) in frozen}
    assert names and all(".q.linear." in n or ".k.linear." in n for n in names), names
    assert all(not p.requires_grad for n, p in net.named_parameters() if n in names)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(torch.rand(4, 1, 8, 8)).square().sum().backward()
    params = dict(net.named_parameters())
    for n in names:
        assert params[n].grad is None, n
    for n in ("blocks.0.attn.q.bn.weight", "blocks.0.attn.v.linear.weight",
              "blocks.0.attn.proj.linear.weight"):
        assert params[n].requires_grad and params[n].grad is not None, n
    opt.step()
    for n in names:
        assert torch.equal(params[n], before[n]), n
    assert not torch.equal(params["blocks.0.attn.v.linear.weight"],
                           before["blocks.0.attn.v.linear.weight"])
    # same parameters as the native attention; 2 x (D x D [+ D bias]) fewer trainable ones
    native = create_model(model, **TINY)
    D, bias = TINY["embed_dim"], int(model.startswith("spikformer"))
    assert _count(net) == _count(native)
    assert _count(native, True) - _count(net, True) == 2 * (D * D + bias * D)


def test_semm_random_attn_freezes_the_query_experts_and_k():
    """STEP's random_attn on SEMM: the E stacked query-expert projections and K (Linear weight
    and bias) stay at their init; router, V, proj and every BN train."""
    torch.manual_seed(0)
    net = create_model(SEMM, **TINY, **ablation_kwargs(SEMM, "random_attn"))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {f"blocks.0.attn.{w}.linear.{t}" for w in "qk" for t in ("weight", "bias")}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1,
                            weight_decay=0.06)
    net(torch.rand(4, 1, 8, 8)).square().sum().backward()
    params = dict(net.named_parameters())
    for n in ("blocks.0.attn.q.bn.weight", "blocks.0.attn.router.linear.weight",
              "blocks.0.attn.v.linear.weight", "blocks.0.attn.proj.linear.weight"):
        assert params[n].requires_grad and params[n].grad is not None, n
    opt.step()
    for n in frozen:
        assert params[n].grad is None and torch.equal(params[n], before[n]), n
    assert not torch.equal(params["blocks.0.attn.router.linear.weight"],
                           before["blocks.0.attn.router.linear.weight"])
    # the same parameters as EMSA; E*e (queries) + e (key) rows of D weights + bias frozen
    native = create_model(SEMM, **TINY)
    D, E = TINY["embed_dim"], native.blocks[0].attn.num_experts
    e = native.blocks[0].attn.expert_dim
    assert _count(net) == _count(native)
    assert _count(native, True) - _count(net, True) == (E * e + e) * (D + 1)
    assert _count(create_model(SEMM)) == 7_739_242  # defaults unchanged


def test_vit_random_attn_splits_qkv_and_freezes_q_and_k():
    """timm's fused qkv becomes a frozen Q/K Linear plus a trainable V Linear: the same function
    and parameter count, and Q/K survive an AdamW step with weight decay."""
    torch.manual_seed(0)
    native = create_model(VIT, **TINY).eval()
    torch.manual_seed(0)
    net = create_model(VIT, **TINY, **ablation_kwargs(VIT, "random_attn")).eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(net(x), native(x), atol=1e-6)  # the split is the same projection
    assert _count(net) == _count(native)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"blocks.0.attn.qkv.qk.weight", "blocks.0.attn.qkv.qk.bias"}
    D = TINY["embed_dim"]
    assert _count(native, True) - _count(net, True) == 2 * D * (D + 1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.5)  # all, frozen included
    net.train()
    net(x).square().sum().backward()
    opt.step()
    params = dict(net.named_parameters())
    for n in frozen:
        assert params[n].grad is None and torch.equal(params[n], before[n]), n
    assert not torch.equal(params["blocks.0.attn.qkv.v.weight"],
                           before["blocks.0.attn.qkv.v.weight"])
    assert _count(create_model(VIT)) == 9_303_994  # defaults unchanged


@pytest.mark.parametrize("model", [*HOSTS, SEMM])
def test_embedding_parameter_counts(model):
    D, C, patch, N = TINY["embed_dim"], TINY["in_chans"], 4, 4  # 8x8 -> 2x2 tokens
    native = create_model(model, **TINY)
    base = _count(native) - _count(native.patch_embed)
    one = create_model(model, **TINY, embed="sps_1conv")
    assert _count(one.patch_embed) == C * D * patch * patch + 2 * D + N * D
    assert _count(one) == base + _count(one.patch_embed)
    two = create_model(model, **TINY, embed="conv2_embed")  # alias of sps_2conv
    h = D // 2
    assert _count(two.patch_embed) == ((C * h * 9 + 2 * h) + (h * D * 9 + 2 * D)
                                       + (D * D * 9 + 2 * D))  # 2 conv-BN stages + RPE
    assert _count(two) == base + _count(two.patch_embed)
    assert type(create_model(model, **TINY, embed="vit_embed").patch_embed) is type(one.patch_embed)


def test_vit_embed_spikes_the_input_on_spikformer_only():
    for model in ("spikformer_4_384", SEMM):  # SEMM's tokenizer is Spikformer's
        assert not isinstance(create_model(model, **TINY, embed="sps_1conv")
                              .patch_embed.input_neuron, torch.nn.Identity)
    assert isinstance(create_model("sdt_2_512", **TINY, embed="sps_1conv")
                      .patch_embed.input_neuron, torch.nn.Identity)


def test_ablation_kwargs_resolve_random_attn_per_host():
    assert ablation_kwargs("spikformer_4_384", "random_attn", "vit_embed") == {
        "attn": "random_ssa", "embed": "vit_embed"}
    assert ablation_kwargs("sdt_2_512", "random_attn", "native") == {"attn": "random_sdsa"}
    assert ablation_kwargs("sdt_2_512", "", "") == {}
    assert ablation_kwargs("spikformer_semm_4_384", "native", "native") == {}
    assert ablation_kwargs(SEMM, "random_attn", "sps_2conv") == {"attn": "random_emsa",
                                                                 "embed": "sps_2conv"}
    assert ablation_kwargs(SEMM, "emsa", "vit_embed") == {"attn": "emsa", "embed": "vit_embed"}
    assert component_labels({"attn": "random_emsa"}) == ("random_attn", "native")
    assert ablation_kwargs(VIT, "random_attn", "sps_1conv") == {"attn": "random_softmax",
                                                                "embed": "sps_1conv"}
    assert component_labels({"attn": "random_softmax", "embed": "sps_1conv"}) == (
        "random_attn", "sps_1conv")
    assert component_labels({"attn": "emsa", "embed": "sps_1conv"}) == ("native", "sps_1conv")
    assert component_labels({"attn": "random_sdsa", "embed": "vit_embed"}) == (
        "random_attn", "vit_embed")
    assert component_labels({"attn": "ssa", "embed": "sps"}) == ("native", "native")
    assert component_labels({}) == ("native", "native")


@pytest.mark.parametrize("model, attention, embedding, match", [
    ("sdt_2_512", "ssa", "native", r"attention for sdt.*valid: native, random_attn, .*sdsa_3"),
    ("spikformer_4_384", "random_sdsa", "native", r"valid: native, random_attn, random_ssa"),
    ("spikformer_4_384", "native", "patchify", r"embedding .*valid: conv2_embed, native"),
    ("spikformer_semm_4_384", "sdsa", "native",
     r"attention for spikformer_semm.*valid: emsa, native, random_attn, random_emsa, sdsa_3"),
    ("spikformer_semm_4_384", "random_ssa", "native", r"valid: emsa, native, random_attn"),
    ("vit_4_384", "sdsa_3", "native", r"spiking attention.*ViT"),
    ("vit_4_384", "random_ssa", "native", r"spiking attention.*ViT"),
    ("vit_4_384", "native", "patchify", r"embedding for vit.*valid: conv2_embed"),
    ("qkformer_10_384", "native", "native",
     r"no meta-transformer switches; models with them: .*sdt_2_512"),
])
def test_invalid_combinations_are_refused(model, attention, embedding, match):
    with pytest.raises(ValueError, match=match):
        ablation_kwargs(model, attention, embedding)


def test_unknown_embedding_on_the_models_names_the_choices():
    # the image tokenizers plus "sequence" (sequential images), sorted
    valid = ", ".join(sorted([*EMBEDDINGS.valid_names(), "sequence"]))
    for model in (*HOSTS, SEMM):
        with pytest.raises(UnknownNameError, match=f"valid: {valid}$"):
            create_model(model, **TINY, embed="patchify")
    with pytest.raises(UnknownNameError, match="attention"):
        create_model(SEMM, **TINY, attn="patchify")
    with pytest.raises(UnknownNameError, match="ViT attention.*valid: random_softmax, softmax"):
        create_model(VIT, **TINY, attn="ssa")
    with pytest.raises(UnknownNameError, match="valid: conv2_embed"):
        create_model(VIT, **TINY, embed="patchify")


def test_sweep_file_loads_and_names_valid_points():
    pytest.importorskip("papermill")
    from stlib.sweep import load_sweep

    sweep = load_sweep(REPO / "params/sweeps/meta_transformer_ablation.yaml")
    assert sweep.study == "meta_transformer_ablation"
    points = sweep.points()
    assert len(points) == 26  # STEP's 3 x 7 spiking cells + its 5 ViT rows
    assert sum(params["model"] == VIT for _, params in points) == 5
    assert sum(params["model"] == SEMM for _, params in points) == 7
    for _, params in points:  # every point is a valid switch on its host
        ablation_kwargs(params["model"], params["attention"], params["embedding"])


def test_sweep_predicts_one_run_folder_per_point():
    pytest.importorskip("papermill")
    from stlib.sweep import load_sweep, predicted_config

    sweep = load_sweep(REPO / "params/sweeps/meta_transformer_ablation.yaml")
    folders = {predicted_config(sweep, {**params, "preset": "quick"}).run_dir
               for _, params in sweep.points()}
    assert len(folders) == len(sweep.points())


@pytest.mark.slow
def test_notebook_quick_run_records_the_switches(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    from stlib.notebooks import run_notebook

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_notebook("meta_transformer_ablation", tmp_path / "ablation.ipynb", cwd=REPO,
                 model="sdt_2_512", attention="random_attn", embedding="vit_embed",
                 preset="quick", epochs=2, device="cpu", output_dir=str(tmp_path / "outputs"))
    run_dirs = list((tmp_path / "outputs" / "meta_transformer_ablation").iterdir())
    assert len(run_dirs) == 1
    saved = yaml.safe_load((run_dirs[0] / "config.yaml").read_text())
    assert saved["model"]["kwargs"]["attn"] == "random_sdsa"
    assert saved["model"]["kwargs"]["embed"] == "vit_embed"
    assert saved["experiment"]["study"] == "meta_transformer_ablation"
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2


def test_semm_sdsa_3_swaps_the_attention_and_keeps_the_expert_mlp():
    """STEP's sdsa_3 on SEMM: the block attention is Meta-SpikeFormer's RepConv attention with
    the host's heads (no experts); the expert MLP (EMSP) stays. The difference in parameters is
    exactly EMSA -> SDSA-3 per block."""
    from stlib.layers.semm import EMSA, EMSP
    from stlib.layers.spike_driven import SDSA3

    net = create_model(SEMM, **ablation_kwargs(SEMM, "sdsa_3"))
    native = create_model(SEMM)
    for block, ref in zip(net.blocks, native.blocks, strict=True):
        assert isinstance(block.attn, SDSA3) and isinstance(block.mlp, EMSP)
        assert isinstance(ref.attn, EMSA) and block.attn.num_heads == 12
        assert _count(block.mlp) == _count(ref.mlp)
    D = 384
    sdsa3 = 4 * (2 * D * D + 15 * D)  # q, k, v, proj: BN(RepConv), 2d^2 + 15d each
    assert _count(net.blocks[0].attn) == sdsa3
    assert _count(net) == _count(native) + 4 * (sdsa3 - _count(native.blocks[0].attn))
    assert _count(net) == 10_611_898
