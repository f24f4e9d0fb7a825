"""Head distances (Jensen-Shannon) on known distributions, and the role labels."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import softmax_rows
from scipy.spatial.distance import jensenshannon

from headmap.analysis.diversity import js_reference, js_row_sums, linkage, mds_embedding, near_duplicates
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


def test_identical_heads_are_at_distance_zero():
    maps = torch.from_numpy(softmax_rows((1, 6, 9), seed=3)).repeat(3, 1, 1)
    assert np.all(js_row_sums(maps) == 0.0)


def test_disjoint_rows_are_log2_per_row():
    rows = 5
    a = torch.zeros(rows, 8)
    b = torch.zeros(rows, 8)
    a[:, :4] = 0.25  # uniform over the first half
    b[torch.arange(rows), 4 + torch.arange(rows) % 4] = 1.0  # one key of the second half
    d = js_row_sums(torch.stack([a, b]))
    assert d[0, 1] == pytest.approx(rows * math.log(2), abs=1e-12)
    assert d[1, 0] == d[0, 1]


def test_matches_scipy_and_the_textbook_formula_under_any_chunking():
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
        np.testing.assert_allclose(
            js_row_sums(torch.from_numpy(maps), budget_bytes=budget), expected, atol=1e-12
        )


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
