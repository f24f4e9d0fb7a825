"""What the engine hands a layer's consumer, text by text: the fused kernels' asks and recomputed blocks.

Each text of a forward sits in a batch element (its own in a padded batch, element 0 for every text
of a packed one) at the positions ``valid[side][text]``; these helpers cut each text out of a layer
call by those positions, so padded and packed forwards share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from headmap.capture.consumers import Consumer, MomentConsumer
from headmap.capture.fused_rows import FusedRows
from headmap.capture.plan import CapturePlan
from headmap.capture.recompute import attention_block, head_states, rows_per_block, weights_block
from headmap.capture.tap import AttentionCall
from headmap.result import LayerKey, Side, Stack

#: Each text's real (non-padding) positions on each side: ``side -> [1-D position tensor per text]``.
Valid = dict[Side, list[torch.Tensor]]

__all__ = ["Valid", "emit_blocks", "fused_asks", "text_ask"]


def text_ask(
    key: LayerKey,
    plan: CapturePlan,
    consumer: MomentConsumer,
    item: int,
    keys: torch.Tensor,
    queries: torch.Tensor,
    device: torch.device,
) -> FusedRows:
    """What text ``item`` asks of layer ``key``, its keys and queries at positions ``keys`` and
    ``queries`` of its batch element."""
    text_rows = torch.tensor(plan.rows[item][key], dtype=torch.long)
    special = [i for i, s in enumerate(plan.key_tokens(item, key).special) if s]
    cells = consumer.key_cells(item, key)
    return FusedRows(
        keys=keys.to(device),
        rows=queries.to(device)[text_rows.to(device)],
        plan_index=torch.arange(len(text_rows)),
        text_rows=text_rows,
        special=torch.tensor(special, dtype=torch.long, device=device),
        cross=key.stack is Stack.CROSS,
        heads=torch.tensor(plan.heads_of(key), dtype=torch.long, device=device),
        key_cell=cells[0] if cells else None,
        n_cells=cells[1] if cells else 0,
    )


def fused_asks(
    call: AttentionCall,
    key: LayerKey,
    plan: CapturePlan,
    consumer: MomentConsumer,
    batch: Sequence[int],
    valid: Valid,
) -> list[FusedRows]:
    """What each text of a padded batch asks of this layer, in the fused kernel's terms."""
    device = call.query.device  # type: ignore[union-attr]  # fused calls always carry queries
    q_side, k_side = key.stack.query_side, key.stack.key_side
    return [
        text_ask(key, plan, consumer, item, valid[k_side][b], valid[q_side][b], device)
        for b, item in enumerate(batch)
    ]


def emit_blocks(
    call: AttentionCall,
    key: LayerKey,
    plan: CapturePlan,
    consumer: Consumer,
    batch: Sequence[int],
    valid: Valid,
    head_index: torch.Tensor,
    block_bytes: int,
    elements: Sequence[int] | None = None,
) -> None:
    """Recompute (or cut) the asked rows of one layer, block by block, for every text of the batch.

    ``elements``: the batch element of each text (default: text ``b`` in element ``b``; a packed
    forward has every text in element 0)."""
    q_side, k_side = key.stack.query_side, key.stack.key_side
    device = (call.query if call.query is not None else call.weights).device  # type: ignore[union-attr]  # queries or weights
    heads = head_index.to(device)
    for b, item in enumerate(batch):
        element = elements[b] if elements is not None else b
        key_pos = valid[k_side][b].to(device)
        text_rows = torch.tensor(plan.rows[item][key], dtype=torch.long)
        row_pos = valid[q_side][b].to(device)[text_rows.to(device)]
        states = head_states(call, element, heads, key_pos) if call.weights is None else None
        step = rows_per_block(len(heads), len(key_pos), block_bytes)
        for start in range(0, len(row_pos), step):
            picked = row_pos[start : start + step]
            if states is None:
                block = weights_block(
                    call, element, heads, picked, key_pos, keep_scores=consumer.keeps_scores
                )
            else:
                block = attention_block(
                    call, states, element, heads, picked, key_pos, keep_scores=consumer.keeps_scores
                )
            # The one place blocks leave the device: consumers work on host tensors, except those that
            # reduce them where they are (statistics: only their per-head sums reach the host).
            kept = block if getattr(consumer, "reduces_on_device", False) else block.to_host()
            consumer.consume(item, key, start, replace(kept, rows=text_rows[start : start + step]))
