"""Which meta-transformer ablation switch fits which host model (STEP's "component test").

The switches themselves (random-Q/K attentions, the patch-embedding variants) are layers in
:mod:`stlib.layers.ablation`. A host model declares ``ablation_host = "<name>"`` in its class
body (Spikformer, SDT, Spikformer+SEMM, the ANN ViT); :func:`ablation_kwargs` maps a notebook's
labels (``random_attn``, ``vit_embed``...) to that host's model kwargs, and
:func:`component_labels` maps a run's kwargs back to the results table's labels.
"""
from __future__ import annotations

from typing import Any

from ..registry import UnknownNameError
from ._registry import list_models, model_class

# ---- which switch fits which host (the notebook's labels -> model kwargs) -------------------

#: Notebook attention labels per host: label -> the ``attn`` value (None: leave the model's
#: default). Host names map to themselves, so a sweep naming them predicts the run folder.
HOST_ATTENTIONS: dict[str, dict[str, str | None]] = {
    "spikformer": {"native": None, "ssa": "ssa", "random_attn": "random_ssa",
                   "random_ssa": "random_ssa", "sdsa_3": "sdsa_3"},
    "sdt": {"native": None, "sdsa": "sdsa", "random_attn": "random_sdsa",
            "random_sdsa": "random_sdsa", "sdsa_3": "sdsa_3"},
    # sdsa_3 on SEMM: RepConv attention (no experts) in front of the expert MLP
    "spikformer_semm": {"native": None, "emsa": "emsa", "random_attn": "random_emsa",
                        "random_emsa": "random_emsa", "sdsa_3": "sdsa_3"},
    # the ANN ViT (stlib.models.vit): softmax attention, random_softmax = frozen Q/K
    "vit": {"native": None, "softmax": "softmax", "random_attn": "random_softmax",
            "random_softmax": "random_softmax"},
}
#: Notebook embedding labels every switchable host takes (None: leave the model's default).
EMBEDDING_LABELS: dict[str, str | None] = {
    "native": None, "sps": "sps", "sps_2conv": "sps_2conv", "conv2_embed": "conv2_embed",
    "sps_1conv": "sps_1conv", "vit_embed": "vit_embed"}
#: Switches that only exist for spiking hosts (refused on the ANN ViT with that reason).
SPIKING_ONLY = {"sdsa_3", "ssa", "sdsa", "random_ssa", "random_sdsa", "emsa",
                "random_emsa"}


def model_host(model: str) -> str:
    """``"spikformer"``, ``"sdt"``, ``"spikformer_semm"`` or ``"vit"`` for a registered model
    name: the ``ablation_host`` its class declares in its own body (a subclass of a host does
    not inherit the switches); another model is an error naming the models that do."""
    if model not in list_models():
        raise UnknownNameError("model", model, list_models())
    host = _declared_host(model)
    if host is None:
        valid = [m for m in list_models() if _declared_host(m) is not None]
        raise ValueError(f"model {model!r} ({model_class(model).__name__}) has no "
                         f"meta-transformer switches; models with them: {', '.join(valid)}")
    return host


def _declared_host(model: str) -> str | None:
    host = vars(model_class(model)).get("ablation_host")
    return host if host in HOST_ATTENTIONS else None


def ablation_kwargs(model: str, attention: str = "native",
                    embedding: str = "native") -> dict[str, str]:
    """Model kwargs for an ablation point, e.g. ``("sdt_2_512", "random_attn", "vit_embed")``
    -> ``{"attn": "random_sdsa", "embed": "vit_embed"}``. ``"native"`` or ``""`` adds nothing
    (the model's default); a host's own names (``"ssa"``, ``"sps"``...) are passed as given.

    Refuses, with the valid choices named, an attention the host does not have (Spikformer+SEMM:
    native / emsa / random_attn / random_emsa / sdsa_3; ViT: native / softmax / random_attn /
    random_softmax, never a spiking attention) and an embedding it cannot take.
    """
    host = model_host(model)
    attention, embedding = attention or "native", embedding or "native"
    if host == "vit" and attention in SPIKING_ONLY:
        raise ValueError(f"attention {attention!r} is a spiking attention; the ANN ViT "
                         f"({model!r}) keeps its softmax attention (attention='native', "
                         f"'softmax', or 'random_attn' for random frozen Q/K)")
    attentions = HOST_ATTENTIONS[host]
    if attention not in attentions:
        raise UnknownNameError(f"attention for {host} model {model!r}", attention, attentions)
    if embedding not in EMBEDDING_LABELS:
        raise UnknownNameError(f"embedding for {host} model {model!r}", embedding,
                               EMBEDDING_LABELS)
    kwargs = {"attn": attentions[attention], "embed": EMBEDDING_LABELS[embedding]}
    return {k: v for k, v in kwargs.items() if v is not None}


def component_labels(model_kwargs: dict[str, Any]) -> tuple[str, str]:
    """The results-table labels ``(attention, embedding)`` of a run from its
    ``config.model.kwargs``: ``native`` where unset, ``random_attn`` for ``random_ssa`` /
    ``random_sdsa`` / ``random_emsa`` / ``random_softmax``, any other name as given (so
    ``vit_embed`` and ``sps_1conv`` stay apart, as in STEP's table)."""
    attn = model_kwargs.get("attn") or "native"
    embed = model_kwargs.get("embed") or "native"
    attn = {"random_ssa": "random_attn", "random_sdsa": "random_attn",
            "random_emsa": "random_attn", "random_softmax": "random_attn", "ssa": "native",
            "sdsa": "native", "emsa": "native", "softmax": "native"}.get(attn, attn)
    return attn, "native" if embed == "sps" else embed
