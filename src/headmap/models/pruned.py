"""Models with attention heads cut out: the per-layer head layout, the cut itself, and loading.

transformers 5 models take one ``num_attention_heads`` per config, but a pruned model keeps a
different number of heads in each layer. headmap keeps the config's counts as they were (they still
size the rotary tables and the head dimension) and sets each attention module's own head-count
attributes instead; the per-layer layout goes into the saved config under :data:`CONFIG_KEY`, and
:func:`load_pruned` rebuilds the model at its original size, cuts it to that layout and only then
loads the weights, so every tensor lands in a module of its own shape.

A layer's layout (:class:`HeadLayout`) names the original heads it keeps. Under grouped-query
attention a key/value head stays while any of its query heads does; the groups left may then differ
in size (2 query heads on one key/value head, 3 on another), which the kernels' uniform
``num_key_value_groups`` cannot express. Such a layer keeps each key/value head once in its weights
and a :class:`SlotLinear` repeats it in the projection's output as often as needed (``slots``), so
the kernel sees equal groups of ``gcd(group sizes)`` query heads: an exact copy, no new parameters.

Supported: the Llama family (``llama``, ``mistral``, ``qwen2``: q/k/v/o projections) and the BERT
family (``bert``, ``roberta``, ``xlm-roberta``: query/key/value and the attention output dense).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch

from headmap.errors import HeadmapError

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

#: The config attribute (and ``config.json`` key) holding the per-layer layouts of a pruned model.
CONFIG_KEY = "headmap_pruned_heads"


@dataclass(frozen=True)
class Family:
    """Where a family keeps its attention projections, relative to one transformer layer."""

    name: str
    model_types: tuple[str, ...]
    layers: str  # path from the base model to the list of layers
    attention: str  # path from a layer to the module that calls the kernel
    query: str  # projection names on that module
    key: str
    value: str
    output: str  # path from a layer to the output projection
    grouped: bool  # True: separate key/value head count (GQA)


FAMILIES = (
    Family(
        "llama",
        ("llama", "mistral", "qwen2"),
        "layers",
        "self_attn",
        "q_proj",
        "k_proj",
        "v_proj",
        "self_attn.o_proj",
        grouped=True,
    ),
    Family(
        "bert",
        ("bert", "roberta", "xlm-roberta"),
        "encoder.layer",
        "attention.self",
        "query",
        "key",
        "value",
        "attention.output.dense",
        grouped=False,
    ),
)


def family_of(model: torch.nn.Module) -> Family:
    """The :class:`Family` of ``model``, or a :class:`HeadmapError` naming its architecture."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(f"{t}" for f in FAMILIES for t in f.model_types)
    raise HeadmapError(
        f"physical head pruning does not support {type(model).__name__} ({model_type}): it cuts the attention "
        f"projections of the Llama and BERT families ({known}); for other models remove heads by gating "
        "them with headmap.ablate(model, heads)"
    )


@dataclass(frozen=True)
class HeadLayout:
    """The heads one layer keeps, as indices of the *original* model's heads.

    ``query``: query heads, in the order the layer now holds them (grouped by key/value head).
    ``kv``: key/value heads kept (equal to ``query`` without GQA). ``slots``: None when ``kv`` feeds
    the kernel as is; else, per key/value slot the kernel sees, the index into ``kv`` it repeats.
    """

    query: tuple[int, ...]
    kv: tuple[int, ...]
    slots: tuple[int, ...] | None = None

    @property
    def groups(self) -> int:
        """Query heads per key/value slot (the module's ``num_key_value_groups``)."""
        slots = len(self.slots) if self.slots is not None else len(self.kv)
        return len(self.query) // max(1, slots)

    def to_json(self) -> dict:
        return {
            "query": list(self.query),
            "kv": list(self.kv),
            "slots": None if self.slots is None else list(self.slots),
        }

    @classmethod
    def from_json(cls, data: dict) -> HeadLayout:
        slots = data.get("slots")
        return cls(
            tuple(int(h) for h in data["query"]),
            tuple(int(h) for h in data["kv"]),
            None if slots is None else tuple(int(s) for s in slots),
        )


class SlotLinear(torch.nn.Linear):
    """A key or value projection that keeps each head once and repeats it per kernel slot.

    ``weight`` is ``[kv_head * head_dim, hidden]``; the output is ``[..., slot * head_dim]`` with
    slot ``s`` a copy of head ``slots[s]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        head_dim: int,
        slots: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.head_dim = head_dim
        # Not saved with the weights: the layout in the config holds it.
        self.register_buffer("slots", torch.tensor(list(slots), dtype=torch.long), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(hidden, self.weight, self.bias)  # [..., kv_head * head_dim]
        return out.unflatten(-1, (-1, self.head_dim))[..., self.slots.to(out.device), :].flatten(-2)


def _get(module: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: torch.nn.Module, path: str, value: torch.nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(module, parent) if parent else module, name, value)


def _layers(model: torch.nn.Module, family: Family) -> list[torch.nn.Module]:
    base = getattr(model, "base_model", model)
    # Every supported family keeps its layers in a ModuleList (``model.layers``, ``encoder.layer``).
    return list(cast(torch.nn.ModuleList, _get(base, family.layers)))


def _config(model: torch.nn.Module) -> PreTrainedConfig:
    """The transformers config of ``model``."""
    # torch's stubs type every module attribute as Tensor | Module; a transformers model's is its config.
    return cast("PreTrainedConfig", model.config)


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The module that calls the attention kernel, per layer in depth order."""
    family = family_of(model)
    return [_get(layer, family.attention) for layer in _layers(model, family)]


def head_dim(model: torch.nn.Module) -> int:
    family = family_of(model)
    attention = _get(_layers(model, family)[0], family.attention)
    # A plain int attribute (Llama: head_dim, BERT: attention_head_size), not the Tensor | Module
    # torch's stubs give every module attribute.
    return int(getattr(attention, "head_dim", None) or cast(int, attention.attention_head_size))


def original_layout(model: torch.nn.Module) -> HeadLayout:
    """Every head of an unpruned layer of ``model``."""
    family, config = family_of(model), _config(model)
    n_query = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_query) if family.grouped else n_query
    return HeadLayout(tuple(range(n_query)), tuple(range(n_kv)))


def current_layouts(model: torch.nn.Module) -> list[HeadLayout]:
    """Each layer's layout: the one recorded in the config of a pruned model, else all heads."""
    recorded = getattr(_config(model), CONFIG_KEY, None)
    n_layers = len(_layers(model, family_of(model)))
    if recorded is None:
        return [original_layout(model)] * n_layers
    layouts = [HeadLayout.from_json(item) for item in recorded["layers"]]
    if len(layouts) != n_layers:
        raise HeadmapError(
            f"the config's {CONFIG_KEY} lists {len(layouts)} layers but the model has {n_layers}"
        )
    return layouts


def _linear(module: torch.nn.Module, path: str) -> torch.nn.Linear:
    """The projection at ``path``: every supported family's are ``nn.Linear`` (``_get`` types any module)."""
    return cast(torch.nn.Linear, _get(module, path))


def _set_counts(attention: torch.nn.Module, **counts: int) -> None:
    """Set the plain int head counts an attention module reads (torch's stubs type module attributes
    as Tensor | Module, so a typed assignment would not check)."""
    for name, value in counts.items():
        setattr(attention, name, value)


def _cut(
    linear: torch.nn.Linear, keep: torch.Tensor, dim: int, slots: Sequence[int] | None = None, head: int = 0
) -> torch.nn.Linear:
    """A new linear layer holding ``linear``'s weight at indices ``keep`` of ``dim`` (0: outputs, 1: inputs)."""
    weight = linear.weight.detach().index_select(dim, keep.to(linear.weight.device)).clone()
    out_features, in_features = weight.shape
    bias = linear.bias is not None
    dtype = weight.dtype
    cut = (
        SlotLinear(in_features, out_features, bias, head, slots, device="meta", dtype=dtype)
        if slots is not None
        else torch.nn.Linear(in_features, out_features, bias=bias, device="meta", dtype=dtype)
    )
    if slots is not None:
        cut.slots = torch.tensor(list(slots), dtype=torch.long, device=weight.device)
    cut.weight = torch.nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias:
        b = linear.bias.detach()
        cut.bias = torch.nn.Parameter(
            b.index_select(0, keep.to(b.device)).clone() if dim == 0 else b.clone(),
            requires_grad=linear.bias.requires_grad,
        )
    cut.train(linear.training)
    return cut


def _columns(positions: Sequence[int], size: int) -> torch.Tensor:
    """Feature indices of heads at ``positions``, each ``size`` wide."""
    return (torch.tensor(list(positions), dtype=torch.long)[:, None] * size + torch.arange(size)).reshape(-1)


def cut_heads(model: torch.nn.Module, layouts: Sequence[HeadLayout]) -> None:
    """Cut ``model`` (in place) down to ``layouts``, one per layer, and record them in its config.

    The layouts name original heads; a model pruned before is cut from its current layout, so
    pruning twice composes. A layer must keep at least one head.
    """
    family = family_of(model)
    layers = _layers(model, family)
    if len(layouts) != len(layers):
        raise HeadmapError(f"got {len(layouts)} head layouts for {len(layers)} layers")
    size = head_dim(model)
    for index, (layer, current, new) in enumerate(zip(layers, current_layouts(model), layouts)):
        if not new.query:
            raise HeadmapError(
                f"layer {index} would keep no head: a layer needs at least one (its attention "
                "module cannot run without heads)"
            )
        missing = set(new.query) - set(current.query) or set(new.kv) - set(current.kv)
        if missing:
            raise HeadmapError(
                f"layer {index} keeps heads {sorted(missing)} that its current layout no longer has"
            )
        attention = _get(layer, family.attention)
        queries = _columns([current.query.index(h) for h in new.query], size)
        kv = _columns([current.kv.index(g) for g in new.kv], size)
        setattr(attention, family.query, _cut(_linear(attention, family.query), queries, 0))
        for name in (family.key, family.value):
            setattr(attention, name, _cut(_linear(attention, name), kv, 0, new.slots, size))
        _set(layer, family.output, _cut(_linear(layer, family.output), queries, 1))
        if family.grouped:
            _set_counts(attention, num_key_value_groups=new.groups)
        else:
            _set_counts(attention, num_attention_heads=len(new.query), all_head_size=len(new.query) * size)
    setattr(
        _config(model),
        CONFIG_KEY,
        {"family": family.name, "layers": [layout.to_json() for layout in layouts]},
    )


def is_pruned(config: object) -> bool:
    return getattr(config, CONFIG_KEY, None) is not None


def _weight_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            raise HeadmapError(f"{index} is not a valid safetensors index: {exc}") from None
        return [folder / name for name in names]
    raise HeadmapError(
        f"{folder} holds a pruned model but no model.safetensors (headmap loads safetensors only)"
    )


class ModelClass(Protocol):
    """A transformers auto model class (``AutoModel``, ``AutoModelForCausalLM``...), as loading uses it."""

    def from_config(self, config: PreTrainedConfig, **kwargs: Any) -> torch.nn.Module: ...

    def from_pretrained(self, pretrained_model_name_or_path: str, **kwargs: Any) -> torch.nn.Module: ...


def load_pruned(
    folder: Path, config: PreTrainedConfig, cls: ModelClass, dtype: torch.dtype | str
) -> torch.nn.Module:
    """Build ``cls`` from ``config`` at its original size, cut it to the recorded layouts, load the weights.

    ``dtype`` ``"auto"`` keeps the dtype the config records (float32 where it names none). The model
    is built on the CPU: :func:`headmap.models.devices.dispatch` spreads it afterwards, ``.to(device)`` moves it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if dtype == "auto":
        recorded = getattr(config, "dtype", None)
        dtype = recorded if isinstance(recorded, torch.dtype) else torch.float32
    assert isinstance(dtype, torch.dtype)
    layouts = [HeadLayout.from_json(item) for item in getattr(config, CONFIG_KEY)["layers"]]
    setattr(config, CONFIG_KEY, None)  # build the full-size skeleton first
    model = cls.from_config(config, dtype=dtype)
    cut_heads(model, layouts)
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(Path(folder)):
        try:
            state.update(load_file(str(path)))
        except (OSError, SafetensorError) as exc:
            raise HeadmapError(f"cannot read {path}: {exc}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise HeadmapError(
            f"the weights in {folder} do not fit its pruned layout: {str(exc).splitlines()[0]}"
        ) from None
    loaded = {model.get_parameter(n).data_ptr() for n in state if _is_parameter(model, n)}
    # A tied output embedding is saved once, as the input embedding: it is missing by name only.
    untied = [
        n for n in missing if not _is_parameter(model, n) or model.get_parameter(n).data_ptr() not in loaded
    ]
    if untied or unexpected:
        raise HeadmapError(
            f"the weights in {folder} do not match its config: missing {untied[:3]}, "
            f"unexpected {list(unexpected)[:3]}"
        )
    return model.to(dtype)


def _is_parameter(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


__all__ = [
    "CONFIG_KEY",
    "FAMILIES",
    "Family",
    "HeadLayout",
    "ModelClass",
    "SlotLinear",
    "attention_modules",
    "current_layouts",
    "cut_heads",
    "family_of",
    "head_dim",
    "is_pruned",
    "load_pruned",
    "original_layout",
]
