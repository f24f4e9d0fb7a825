"""Recompute attention weights from a tapped kernel call, for chosen heads, rows and keys.

This reproduces the eager softmax(scale * Q K^T [softcap] + bias + mask) for a block of query rows
at a time, so that memory is bounded by the block and not by the sequence squared.

Precision: the queries, keys, biases and masks are the model's own, in the model's dtype; the scores
and the softmax are float32 whatever that dtype, as SDPA and flash kernels compute them internally.
For a bfloat16 or float16 model this gives the weights its kernel applied (tested: weights times
values give the kernel's output to one unit of its rounding), and differs from the model's eager
``output_attentions`` by the rounding eager applies to the scores and weights (tests/test_dtypes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from headmap.capture.tap import AttentionCall


def broadcast_pick(tensor: torch.Tensor, batch: int, heads: torch.Tensor) -> torch.Tensor:
    """``tensor[batch, heads]`` for a ``[batch|1, heads|1, q, k]`` tensor, broadcasting size-1 dims."""
    picked = tensor[batch if tensor.shape[0] > 1 else 0]
    return picked[heads] if picked.shape[0] > 1 else picked[:1]


@dataclass(frozen=True)
class Block:
    """Attention weights of some query rows of one layer of one text, as handed to consumers.

    ``weights`` is ``[head, row, key]`` float32 over the first ``weights.shape[-1]`` keys of the
    text; keys beyond that width are invisible to every row of the block (causal attention), so
    their weight is exactly zero. ``rows`` are the query-token indices (in the text) of the rows,
    ``visible`` how many keys each row may attend to, ``row_max`` each row's largest pre-softmax
    score ``[head, row]`` (lets consumers get entropies without a log over the whole block).
    """

    weights: torch.Tensor
    rows: torch.Tensor
    visible: torch.Tensor
    scores_max: torch.Tensor
    scores: torch.Tensor | None = None
    causal: bool = False
    """True when no row attends to a key after itself (lets distances use a matrix-vector product)."""

    @property
    def width(self) -> int:
        return self.weights.shape[-1]

    def to_host(self) -> Block:
        """The block with every tensor in host memory (a no-op on CPU): consumers use numpy."""
        if self.weights.device.type == "cpu":
            return self
        return replace(
            self,
            weights=self.weights.cpu(),
            rows=self.rows.cpu(),
            visible=self.visible.cpu(),
            scores_max=self.scores_max.cpu(),
            scores=None if self.scores is None else self.scores.cpu(),
        )


@dataclass(frozen=True)
class HeadStates:
    """Queries and keys of the selected heads of one batch element, gathered once per layer.

    ``query`` is ``[head, seq, dim]`` pre-multiplied by the scale; ``key`` is ``[head, key, dim]``
    over the element's real (non-padding) keys, with GQA key heads already matched to query heads.
    Gathering these per block instead would copy the whole key matrix once per block.
    """

    query: torch.Tensor
    key: torch.Tensor


def head_states(call: AttentionCall, batch: int, heads: torch.Tensor, keys: torch.Tensor) -> HeadStates:
    """Gather :class:`HeadStates` for ``heads`` (query-head indices) over key positions ``keys``."""
    assert call.query is not None and call.key is not None, "a kernel call has queries and keys"
    n_rep = call.query.shape[1] // call.key.shape[1]  # GQA: query head h reads kv head h // n_rep
    # Scaling the queries instead of the scores saves a full pass over every block.
    query = call.query[batch, heads].float().mul_(call.scaling)
    key = call.key[batch, heads // n_rep]
    contiguous = len(keys) == key.shape[1] and (len(keys) == 0 or int(keys[-1]) == len(keys) - 1)
    return HeadStates(query=query, key=(key if contiguous else key[:, keys]).float())


def attention_block(
    call: AttentionCall,
    states: HeadStates,
    batch: int,
    heads: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
    keep_scores: bool = False,
) -> Block:
    """Attention weights of ``heads`` for query ``rows`` over ``keys`` of batch element ``batch``.

    ``heads`` are query-head indices; ``rows`` and ``keys`` are positions in the (padded) sequence
    as the kernel saw it, ``keys`` ascending and matching ``states.key``. Keys left out (padding)
    are excluded *before* the softmax, which equals the model's own result because the model masks
    them to zero anyway. ``keep_scores`` keeps the masked scores in the block (for entropy without
    a log pass).
    """
    implicit = call.mask is None
    key_states = states.key
    if implicit and call.is_causal:
        # Under a causal flag no row sees past the block's last row: skip those keys entirely.
        width = int(torch.searchsorted(keys, rows.max(), right=True))
        keys, key_states = keys[:width], key_states[:, :width]
    q = states.query[:, rows]  # [head, row, dim]
    scores = torch.matmul(q, key_states.transpose(1, 2))  # [head, row, key]
    if call.softcap is not None:
        scores = torch.tanh(scores.div_(call.softcap)).mul_(call.softcap)
    if call.position_bias is not None:
        scores += broadcast_pick(call.position_bias, batch, heads)[:, rows][:, :, keys].float()
    lowest = torch.finfo(torch.float32).min
    if implicit:
        mask_implicit_(scores, call, rows, keys)
        visible = implicit_visible_counts(call, rows, keys)
    else:
        mask = broadcast_pick(call.mask, batch, heads)[:, rows][:, :, keys]  # type: ignore[arg-type]  # mask is set
        if mask.dtype != torch.bool:
            scores += mask.float().clamp(min=lowest)
            # Hidden keys hold the mask dtype's lowest value: float16's is only -65504.
            mask = mask > torch.finfo(mask.dtype).min / 2
        scores.masked_fill_(~mask, lowest)
        visible = mask.sum(-1).amax(0)
    scores_max = scores.amax(-1)
    weights = torch.softmax(scores, dim=-1)
    return Block(
        weights=weights,
        rows=rows,
        visible=visible,
        scores_max=scores_max,
        scores=scores if keep_scores else None,
        causal=implicit and call.is_causal,
    )


def weights_block(
    call: AttentionCall,
    batch: int,
    heads: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
    keep_scores: bool = False,
) -> Block:
    """A :class:`Block` cut from weights the model computed itself (``call.weights``, eager-weights path).

    Padding keys are dropped; the model gave them exactly zero weight. Which keys a row could see
    is read off the weights (a key the mask hid has weight exactly 0), and the scores needed for
    entropies are ``log(weight)``, which differ from the model's logits by a per-row constant only.
    """
    weights = call.weights[batch, heads][:, rows][:, :, keys].float()  # type: ignore[index]  # eager path
    lowest = torch.finfo(torch.float32).min
    scores = weights.log().clamp_(min=lowest) if keep_scores else None
    return Block(
        weights=weights,
        rows=rows,
        visible=(weights > 0).sum(-1).amax(0),
        scores_max=weights.amax(-1).log().clamp_(min=lowest),
        scores=scores,
    )


def mask_implicit_(scores: torch.Tensor, call: AttentionCall, rows: torch.Tensor, keys: torch.Tensor) -> None:
    """Fill ``scores`` ``[head, row, key]`` with the lowest float where a causal or sliding-window
    flag hides the key (kernels align the causal pattern to the top-left when given only a flag).

    Only the columns that can hold a hidden key are visited: under a causal flag the keys after the
    block's first row, under a window the keys before its last row's window; for a block of rows
    over a long text that is a small corner, not the whole block.
    """
    lowest = torch.finfo(torch.float32).min
    if call.is_causal:
        start = int(torch.searchsorted(keys, rows.min(), right=True))
        if start < len(keys):
            scores[..., start:].masked_fill_(keys[None, start:] > rows[:, None], lowest)
    if call.sliding_window is not None:
        stop = int(torch.searchsorted(keys, rows.max() - call.sliding_window, right=True))
        if stop > 0:
            scores[..., :stop].masked_fill_(keys[None, :stop] <= rows[:, None] - call.sliding_window, lowest)


def implicit_visible_counts(call: AttentionCall, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Keys each row may see under the flags, counted without building a mask (``keys`` ascending)."""
    upto = torch.searchsorted(keys, rows, right=True) if call.is_causal else torch.full_like(rows, len(keys))
    if call.sliding_window is None:
        return upto
    return upto - torch.searchsorted(keys, rows - call.sliding_window, right=True)


def rows_per_block(num_heads: int, num_keys: int, budget_bytes: int) -> int:
    """How many query rows fit the budget: scores, softmax and mask temporaries are ~3 floats each."""
    return max(1, budget_bytes // max(1, num_heads * num_keys * 4 * 3))
