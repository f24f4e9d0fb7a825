"""The one addressing rule: calls of a forward map to their layers, a shared module (ALBERT) once per
layer, and a count that runs past one forward wraps round."""

from __future__ import annotations

import torch
from tiny_models import build

from headmap.capture.discovery import discover, forward_module
from headmap.capture.intercept import CallCounter, LayerAddressing
from headmap.capture.tap import AttentionCall, CapturePath, Proceed
from headmap.result import LayerKey, Side, Stack


def test_call_counter_counts_per_module_and_resets():
    a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    counter = CallCounter()
    assert [counter.next(a), counter.next(a), counter.next(b), counter.next(a)] == [0, 1, 0, 2]
    counter.reset()
    assert counter.next(a) == 0


def _seen(loaded, layers: list[LayerKey], forwards: int = 1) -> list[LayerKey | None]:
    addressing = LayerAddressing(discover(loaded.model), layers)
    counter = CallCounter()  # never reset: the second forward must wrap round
    seen: list[LayerKey | None] = []

    def around(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        assert call.via in CapturePath
        seen.append(addressing.locate(call, counter))
        return proceed()

    ids = loaded.tokenizer("A short text.", return_tensors="pt")
    with torch.inference_mode(), addressing.intercept(around):
        for _ in range(forwards):
            forward_module(loaded.model)(**ids)
    return seen


def test_shared_module_is_one_layer_per_call(bert_tokenizer):
    albert, _ = build("albert", bert_tokenizer)
    keys = sorted(discover(albert.model).sites, key=lambda k: k.sort_key)
    assert len(keys) > 1 and len({id(discover(albert.model).sites[k].module) for k in keys}) == 1
    assert _seen(albert, keys, forwards=2) == keys * 2
    assert _seen(albert, keys[1:2]) == [None, keys[1]] + [None] * (len(keys) - 2)


def test_plain_model_calls_map_in_depth_order(bert_tokenizer):
    bert, _ = build("bert", bert_tokenizer)
    keys = sorted(discover(bert.model).sites, key=lambda k: k.sort_key)
    # Only the asked layers' modules are tapped.
    assert _seen(bert, keys) == keys and _seen(bert, keys[:1]) == keys[:1]


def test_sides_of_each_stack():
    assert Stack.SELF.query_side is Side.SOURCE and Stack.ENCODER.key_side is Side.SOURCE
    assert Stack.DECODER.query_side is Side.TARGET and Stack.DECODER.key_side is Side.TARGET
    assert Stack.CROSS.query_side is Side.TARGET and Stack.CROSS.key_side is Side.SOURCE
