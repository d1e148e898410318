"""Loading checkpoints in the official repositories' layouts (``stlib.load_official``).

``tests/data/official_layouts/<config>.json`` lists, for one config of each family, every key
and shape of the state dict that the official code saves, in its order, and the stlib key it
belongs to (``null``: a module the official forward never uses). The keys and shapes were read
off the official models; each pairing was confirmed by building the official model with random
weights and random BatchNorm statistics, converting it, and comparing logits in eval mode
(equal to 1e-15 in float64; see the README's "Evaluate a published checkpoint").
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import stlib
from stlib.models import CheckpointError, load_official, published_checkpoint
from stlib.models.official_weights import LAYOUTS, read_state_dict

LAYOUT_DIR = Path(__file__).parent / "data" / "official_layouts"
FIXTURES = sorted(p.stem for p in LAYOUT_DIR.glob("*.json"))


def fixture(name: str) -> dict:
    return json.loads((LAYOUT_DIR / f"{name}.json").read_text())


def random_official(rows: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the official layout with a distinct random value in every entry."""
    g = torch.Generator().manual_seed(seed)
    return {key: (torch.randint(0, 1000, shape, generator=g) if key.endswith("num_batches_tracked")
                  else torch.randn(shape, generator=g)) for key, shape, _ in rows}


def build(spec: dict) -> torch.nn.Module:
    return stlib.create_model(spec["model"], **spec["kwargs"])


def test_every_family_has_a_layout_fixture():
    families = {layout.family.split(" (")[0] for layout in LAYOUTS}
    covered = {stlib.models.official_weights.official_layout(build(fixture(n))).family.split(" (")[0]
               for n in FIXTURES}
    assert covered == families


@pytest.mark.parametrize("name", FIXTURES)
def test_official_layout_loads_every_tensor_where_it_belongs(name):
    spec = fixture(name)
    official = random_official(spec["keys"])
    model = build(spec)
    load_official(model, official)
    ours = model.state_dict()
    filled = {k: torch.zeros(len(v), dtype=torch.bool) if v.dim() else torch.zeros(1, dtype=torch.bool)
              for k, v in ours.items()}
    for key, shape, target in spec["keys"]:
        if target is None:
            continue  # the official forward never reads it
        # "name[a:b]": rows a..b of a tensor that stacks several official ones (SEMM's experts)
        name, _, rows = target.partition("[")
        start, stop = (int(i) for i in rows.rstrip("]").split(":")) if rows else (0, None)
        tensor = ours[name] if ours[name].dim() == 0 else ours[name][start:stop]
        assert torch.equal(tensor.reshape(shape), official[key]), f"{key} -> {target}"
        filled[name][start:stop] = True
    unfilled = [k for k, rows in filled.items() if not rows.all()]
    assert unfilled == [], f"stlib tensors no official key filled: {unfilled[:5]}"


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 299},
    lambda sd: {"state_dict": sd},
    lambda sd: {"net": {f"module.{k}": v for k, v in sd.items()}},
], ids=["plain", "timm-ddp", "state_dict", "net-ddp"])
def test_wrappers_and_ddp_prefixes_are_removed(wrap, tmp_path):
    spec = fixture("sdt_2_512")
    official = random_official(spec["keys"])
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(official), path)
    model = stlib.create_model("sdt_2_512", pretrained=path)
    assert torch.equal(model.head.fc.weight, official["head.weight"])


def test_old_checkpoints_without_num_batches_tracked_load():
    spec = fixture("spikformer_4_384")
    official = {k: v for k, v in random_official(spec["keys"]).items()
                if not k.endswith("num_batches_tracked")}
    model = stlib.create_model("spikformer_4_384", pretrained=official)
    assert torch.equal(model.blocks[0].attn.q.linear.weight, official["block.0.attn.q_linear.weight"])


def test_missing_key_is_one_error_naming_it_and_the_layout():
    spec = fixture("spikformer_4_384")
    official = random_official(spec["keys"])
    del official["block.2.mlp.fc1_bn.running_var"]
    with pytest.raises(CheckpointError) as error:
        stlib.create_model("spikformer_4_384", pretrained=official)
    message = str(error.value)
    assert "blocks.2.mlp.fc1.bn.{running_var}" in message
    assert "Spikformer layout" in message and "ZK-Zhou/spikformer" in message


def test_unexpected_key_is_refused():
    official = random_official(fixture("spikformer_4_384")["keys"])
    official["block.0.attn.extra_conv.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected \(1 official keys with no place\): block\.0\.attn\.extra_conv\.\{weight\}"):
        stlib.create_model("spikformer_4_384", pretrained=official)


def test_checkpoint_of_another_family_names_that_family():
    official = random_official(fixture("sdt_2_512")["keys"])
    with pytest.raises(CheckpointError, match="SDT v1 layout: a checkpoint of another family"):
        stlib.create_model("spikformer_4_384", pretrained=official)


def test_checkpoint_of_another_config_names_the_wrong_shapes():
    official = random_official(fixture("spikformer_4_384")["keys"])
    with pytest.raises(CheckpointError, match=r"wrong shape \(170\): patch_embed\.proj_conv\.weight \(48, 3, 3, 3\) -> patch_embed\.stages\.0\.conv\.weight \(32, 3, 3, 3\)"):
        stlib.create_model("spikformer_4_256", pretrained=official)


def test_truncated_or_missing_file_is_one_clear_error(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(random_official(fixture("sdt_2_512")["keys"]), path)
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="could not be read.*is the file complete"):
        stlib.create_model("sdt_2_512", pretrained=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        stlib.create_model("sdt_2_512", pretrained=tmp_path / "nope.pth")


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": random_official(fixture("sdt_2_512")["keys"]), "args": Path("x")}, path)
    with pytest.raises(CheckpointError, match="could not be read"):
        stlib.create_model("sdt_2_512", pretrained=path)


def test_stlib_own_state_dict_and_run_checkpoint_load(tmp_path):
    source = stlib.create_model("sdt_2_256")
    path = tmp_path / "last.pt"
    torch.save({"model": source.state_dict(), "epoch": 3, "optimizer": {}}, path)
    model = stlib.create_model("sdt_2_256", pretrained=path)
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k


def test_distillation_head_folds_into_the_main_head():
    """Meta-SpikeFormer ``--kd``: eval logits are (head(x) + head_kd(x)) / 2 of the same spikes."""
    spec = fixture("sdt_v2_15m")
    official = random_official(spec["keys"])
    kd = {"head_kd.weight": torch.randn_like(official["head.weight"]),
          "head_kd.bias": torch.randn_like(official["head.bias"])}
    x = torch.rand(2, 3, 32, 32)

    def logits(state):
        model = stlib.create_model("sdt_v2_15m_cifar", num_classes=1000, T=1, pretrained=state)
        return model.eval()(x)

    with torch.no_grad():
        main = logits(official)
        distilled = logits({**official, "head.weight": kd["head_kd.weight"],
                            "head.bias": kd["head_kd.bias"]})
        both = logits({**official, **kd})
    assert torch.allclose(both, (main + distilled) / 2, atol=1e-5)


def test_read_state_dict_refuses_an_object_without_tensors():
    with pytest.raises(CheckpointError, match="holds no state dict: top-level keys"):
        read_state_dict({"epoch": 3, "args": {"lr": 1e-3}})


def test_model_without_official_code_says_so():
    with pytest.raises(CheckpointError, match="has no official checkpoint layout"):
        stlib.create_model("vit_4_384", pretrained={"head.weight": torch.zeros(1)})


def test_published_checkpoints_are_recorded_with_their_accuracy():
    ckpt = published_checkpoint("sdt_8_768")
    assert ckpt.dataset == "imagenet" and ckpt.top1 == 77.07 and ckpt.url.startswith("https://")
    assert published_checkpoint("spikformer_4_384") is None  # none was released
