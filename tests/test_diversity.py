"""Head distances (Jensen-Shannon) on known distributions, by the compiled kernel and by torch, and
the role labels."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import softmax_rows
from scipy.spatial.distance import jensenshannon

from headmap.analysis.diversity import (
    js_pairs,
    js_pairs_torch,
    js_reference,
    js_row_sums,
    linkage,
    mds_embedding,
    near_duplicates,
)
from headmap.analysis.partials import pack_upper, unpack_upper
from headmap.analysis.roles import (
    MIXED,
    ROLE_ORDER,
    ROLES,
    THRESHOLDS,
    Direction,
    Role,
    assign_roles,
    describe_thresholds,
    role_tests,
)
from headmap.capture import native

# How close each path must come to float64 on every pair's sum over rows: the compiled kernel
# (float32 terms summed in float64: a few 1e-7 measured on these shapes) and torch's float64 path.
KERNEL_ATOL = 1e-6
TORCH_ATOL = 1e-12
PATHS = [
    pytest.param(
        "kernel",
        marks=pytest.mark.skipif(
            native.unavailable() is not None, reason=f"no kernel: {native.unavailable()}"
        ),
    ),
    "torch",
]


@pytest.fixture(params=PATHS)
def path(request):
    """``(js_pairs by that path, its tolerance)``; the kernel is built here on first use."""
    if request.param == "torch":
        return js_pairs_torch, TORCH_ATOL
    assert native.module() is not None, native.unavailable()
    return js_pairs, KERNEL_ATOL


def ragged(heads: int, widths: list[int], keys: int, seed: int, sharp: float = 3.0):
    """``(maps [head, row, keys] float32, widths [row])``: row r a random distribution over its
    first widths[r] keys, and garbage (uniform in 0..7, or NaN: not a distribution) beyond."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 7, (heads, len(widths), keys)).astype(np.float32)
    maps[:, ::3, -1] = np.nan  # a row shorter than the keys must not read its last one
    for r, w in enumerate(widths):
        if w:
            maps[:, r, :w] = softmax_rows((heads, w), seed=seed + r, sharp=sharp)
    return torch.from_numpy(maps), torch.tensor(widths)


def reference_sums(maps: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
    """``[head, head]``: the sums over rows of :func:`js_reference` in float64, rows cut at their
    widths (scipy would renormalize float32 rows that sum to 1 only to 1e-7; it agrees with
    js_reference on exact distributions: the last test)."""
    p = maps.double().numpy()
    cut = [(r, w) for r, w in enumerate(widths.tolist()) if w > 0]
    n = p.shape[0]
    out = np.array(
        [[sum(js_reference(p[a, r, :w], p[b, r, :w]) for r, w in cut) for b in range(n)] for a in range(n)]
    )
    assert np.isfinite(out).all()  # so that NaN == NaN never passes a comparison
    return out


@pytest.mark.parametrize(
    "widths, keys",
    [
        ([15, 1, 7, 15, 3, 9, 2, 12, 0] * 3 + list(range(1, 16)), 15),  # texts of a few tokens, causal rows
        ([150, 97, 64, 65, 1, 140, 150, 33], 150),  # rows longer than the kernel's chunks (split blocks)
    ],
)
def test_ragged_rows_match_the_reference(path, widths, keys):
    js, atol = path
    maps, w = ragged(7, widths, keys, seed=len(widths))
    found = js(maps, w)
    np.testing.assert_allclose(found, reference_sums(maps, w), rtol=0, atol=atol)
    assert np.array_equal(found, found.T) and np.all(np.diag(found) == 0.0)


def test_identical_heads_are_at_distance_zero(path):
    js, _ = path
    maps = torch.from_numpy(softmax_rows((1, 6, 9), seed=3)).repeat(3, 1, 1)
    assert np.all(js(maps) == 0.0)
    maps, widths = ragged(1, [9, 4, 1, 0, 6], 9, seed=4)
    assert np.all(js(maps.repeat(4, 1, 1), widths) == 0.0)  # with garbage beyond the widths


def test_disjoint_rows_are_log2_per_row(path):
    js, atol = path
    rows = 5
    a = torch.zeros(rows, 8)
    b = torch.zeros(rows, 8)
    a[:, :4] = 0.25  # uniform over the first half
    b[torch.arange(rows), 4 + torch.arange(rows) % 4] = 1.0  # one key of the second half
    d = js(torch.stack([a, b]))
    assert d[0, 1] == pytest.approx(rows * math.log(2), abs=atol)
    assert d[1, 0] == d[0, 1]


def test_widths_are_honoured_and_texts_pack(path):
    js, atol = path
    texts = [ragged(5, list(range(1, n + 1)), n, seed=n) for n in (3, 11, 6)]  # three causal texts
    longest = max(maps.shape[2] for maps, _ in texts)
    packed = torch.cat(
        [torch.nn.functional.pad(maps, (0, longest - maps.shape[2]), value=5.0) for maps, _ in texts], 1
    )
    widths = torch.cat([w for _, w in texts])
    together = js(packed, widths)
    assert np.isfinite(together).all()
    np.testing.assert_allclose(together, sum(js(maps, w) for maps, w in texts), rtol=0, atol=atol)
    zeroed = torch.where(torch.arange(longest)[None, :] < widths[:, None], packed, 0.0)
    np.testing.assert_allclose(js(zeroed, widths), together, rtol=0, atol=atol)
    np.testing.assert_allclose(js(zeroed), together, rtol=0, atol=atol)  # zeros beyond: widths not needed
    strided = packed.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # keys not adjacent in memory
    np.testing.assert_allclose(js(strided, widths), together, rtol=0, atol=TORCH_ATOL)
    assert not np.allclose(js(packed, torch.full_like(widths, longest)), together, atol=1e-3)


def test_near_identical_heads_keep_their_distance(path):
    # Heads 1e-3 apart: their distances are ~1e-5, which a difference of float32 entropies would
    # miss by 6%; the kernel sums such rows as a series, to float32's relative precision.
    js, _ = path
    base, widths = ragged(1, list(range(1, 31)) * 4, 30, seed=8)
    noise = torch.randn(6, *base.shape[1:], generator=torch.Generator().manual_seed(0))
    noisy = torch.where(torch.arange(30)[None, :] < widths[:, None], base * (1 + 1e-3 * noise), 0.0)
    noisy = (noisy / noisy.sum(-1, keepdim=True)).float()
    expected = reference_sums(noisy, widths)
    pairs = expected[np.triu_indices(6, 1)]
    assert pairs.min() > 1e-6 and pairs.max() < 1e-4
    np.testing.assert_allclose(js(noisy, widths), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.skipif(native.unavailable() is not None, reason=f"no kernel: {native.unavailable()}")
def test_the_kernel_gives_the_same_bits_on_any_number_of_threads():
    maps, widths = ragged(40, [15, 3, 9] * 12 + [90, 70], 90, seed=6)  # enough work for every thread
    before = torch.get_num_threads()
    try:
        found = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            found.append(js_pairs(maps, widths))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(found[0], found[1])


def test_the_torch_path_is_taken_without_the_kernel(monkeypatch):
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    maps, widths = ragged(4, [5, 2, 5], 5, seed=2)
    assert np.array_equal(js_pairs(maps, widths), js_pairs_torch(maps, widths))
    with pytest.raises(ValueError, match="widths"):
        js_pairs(maps, torch.tensor([5, 6, 1]))


def test_row_sums_match_scipy_and_the_textbook_formula_under_any_chunking():
    maps = softmax_rows((7, 5, 11), seed=1, sharp=2.0).astype(np.float64)
    maps[:, :, 8:] = 0.0  # invisible keys (as in causal rows) have weight exactly 0
    maps /= maps.sum(-1, keepdims=True)
    expected = np.array(
        [
            [sum(jensenshannon(p, q) ** 2 for p, q in zip(maps[a], maps[b])) for b in range(7)]
            for a in range(7)
        ]
    )
    textbook = np.array(
        [[sum(js_reference(p, q) for p, q in zip(maps[a], maps[b])) for b in range(7)] for a in range(7)]
    )
    np.testing.assert_allclose(textbook, expected, atol=1e-12)
    for budget in (1, 900, 2**19):
        found = js_pairs_torch(torch.from_numpy(maps), budget_bytes=budget)
        np.testing.assert_allclose(found, expected, atol=TORCH_ATOL)
    # js_row_sums takes whichever path this machine has (the kernel reads the maps in float32)
    np.testing.assert_allclose(js_row_sums(torch.from_numpy(maps)), expected, atol=KERNEL_ATOL)


def test_pack_round_trip_and_near_duplicates():
    d = js_row_sums(torch.from_numpy(softmax_rows((6, 4, 4), seed=5)))
    assert np.array_equal(unpack_upper(pack_upper(d), 6), d)
    labels = [f"h{i}" for i in range(6)]
    pairs = near_duplicates(d, labels, 4)
    flat = sorted(d[np.triu_indices(6, 1)])
    assert [p[2] for p in pairs] == pytest.approx(flat[:4])
    a, b = labels.index(pairs[0][0]), labels.index(pairs[0][1])
    assert d[a, b] == pairs[0][2] and a < b


def test_clustering_and_mds_recover_two_groups():
    rng = np.random.default_rng(0)
    base = softmax_rows((2, 6, 10), seed=9, sharp=4.0)
    maps = []
    for g in range(2):
        for _ in range(4):  # four noisy copies of each of two heads
            noisy = base[g] + rng.uniform(0, 0.01, base[g].shape).astype(np.float32)
            maps.append(noisy / noisy.sum(-1, keepdims=True))
    d = js_row_sums(torch.from_numpy(np.stack(maps)))
    from scipy.cluster.hierarchy import fcluster

    groups = fcluster(linkage(d), 2, criterion="maxclust")
    assert len(set(groups[:4])) == 1 and len(set(groups[4:])) == 1 and groups[0] != groups[4]
    xy = mds_embedding(d)
    within = np.linalg.norm(xy[:4] - xy[:4].mean(0), axis=1).max()
    between = np.linalg.norm(xy[:4].mean(0) - xy[4:].mean(0))
    assert between > 5 * within
    assert np.array_equal(mds_embedding(d), xy)  # reproducible


def test_roles_follow_thresholds_and_order():
    stats = (
        "prev_share",
        "next_share",
        "diag_share",
        "first_share",
        "special_share",
        "entropy_norm",
        "distance",
    )
    base = {
        "prev_share": 0.1,
        "next_share": 0.1,
        "diag_share": 0.1,
        "first_share": 0.1,
        "special_share": 0.1,
        "entropy_norm": 0.5,
        "distance": 5.0,
    }
    cases = [
        ({"prev_share": 0.51, "first_share": 0.9}, "previous-token"),  # positional first
        ({"next_share": 0.6}, "next-token"),
        ({"diag_share": 0.7}, "diagonal"),
        ({"first_share": 0.31, "special_share": 0.9}, "first-token sink"),
        ({"first_share": 0.30}, MIXED),  # strictly above 0.3 (Gu et al. 2025)
        ({"special_share": 0.55}, "special-token"),
        ({"entropy_norm": 0.8}, "broad"),
        ({"distance": 2.0}, "local"),
        ({"distance": float("nan")}, MIXED),  # cross-attention: undefined distance tests nothing
        ({}, MIXED),
    ]
    means = {s: np.array([[{**base, **change}[s] for change, _ in cases]]) for s in stats}
    roles = assign_roles(means)
    assert list(roles[0]) == [role for _, role in cases]
    lines = describe_thresholds()
    assert lines[3].startswith("first-token sink: first_share > 0.3 (") and "Gu et al. 2025" in lines[3]
    assert f"{THRESHOLDS.broad:g}" in lines[5] and "3.8 / log(128)" in lines[5]
    assert THRESHOLDS.broad == pytest.approx(3.8 / math.log(128), abs=0.005)
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.sink = 0.5  # type: ignore[misc]  # one frozen set of thresholds


def test_roles_are_records_read_by_field():
    assert all(isinstance(role, Role) for role in ROLE_ORDER)
    local = ROLE_ORDER[-1]
    assert (local.name, local.statistic, local.threshold, local.direction) == (
        "local",
        "distance",
        THRESHOLDS.local,
        Direction.AT_MOST,
    )
    assert ROLES[-1] == MIXED and ROLES[:-1] == tuple(role.name for role in ROLE_ORDER)
    assert describe_thresholds()[:-1] == [role.describe() for role in role_tests()]
    with pytest.raises(dataclasses.FrozenInstanceError):
        local.threshold = 3.0  # type: ignore[misc]  # the records are frozen
