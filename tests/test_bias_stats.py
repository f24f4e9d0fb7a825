"""Bias probe, no model: paired statistics equal scipy's and numpy's, pairs, templates and name lists."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from headmap import HeadmapError
from headmap.apps.bias.causal import control_cells, name_scores, top_cells
from headmap.apps.bias.inputs import as_groups, check_template, read_names
from headmap.apps.bias.pairs import make_pairs, pairing
from headmap.apps.bias.stats import bh, bootstrap_means, paired, paired_columns

# A fixed example: outputs of 12 pairs (as a probe would see them), with a tie and one zero difference.
X = np.array([-2.31, -1.87, -2.95, -2.02, -1.44, -2.60, -2.18, -1.91, -2.75, -2.05, -1.62, -2.40])
Y = np.array([-2.52, -1.99, -2.80, -2.33, -1.70, -2.61, -2.45, -1.91, -2.90, -2.30, -1.61, -2.66])


def direct_bootstrap(d: np.ndarray, resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    """The textbook percentile bootstrap: draw all indices at once, average, take the quantiles."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def test_paired_statistics_equal_scipy_and_numpy():
    s = paired(X, Y, resamples=4000, seed=7)
    d = X - Y
    t = st.ttest_rel(X, Y)
    w = st.wilcoxon(d)
    assert s.n == 12 and s.mean == pytest.approx(d.mean(), abs=1e-15)
    assert s.mean_x == pytest.approx(X.mean()) and s.mean_y == pytest.approx(Y.mean())
    assert s.sd == pytest.approx(np.std(d, ddof=1), abs=1e-15)
    assert s.t == pytest.approx(t.statistic, rel=1e-12) and s.t_p == pytest.approx(t.pvalue, rel=1e-12)
    assert s.wilcoxon == pytest.approx(w.statistic) and s.wilcoxon_p == pytest.approx(w.pvalue, rel=1e-12)
    assert s.d_z == pytest.approx(d.mean() / np.std(d, ddof=1), rel=1e-12)
    low, high = direct_bootstrap(d, 4000, 7, 0.95)
    assert s.ci_low == pytest.approx(low, abs=1e-12) and s.ci_high == pytest.approx(high, abs=1e-12)
    assert s.ci_low < s.mean < s.ci_high
    # the same bootstrap as scipy's percentile method, up to its own random draws
    ref = st.bootstrap(
        (d,), np.mean, n_resamples=4000, method="percentile", random_state=1
    ).confidence_interval
    assert abs(s.ci_low - ref.low) < 0.02 and abs(s.ci_high - ref.high) < 0.02
    # other confidence levels and seeds follow the same rule
    s90 = paired(X, Y, resamples=1500, seed=3, confidence=0.9)
    assert (s90.ci_low, s90.ci_high) == pytest.approx(direct_bootstrap(d, 1500, 3, 0.9), abs=1e-12)


def test_chunked_bootstrap_equals_drawing_every_index_at_once():
    d = np.random.default_rng(0).normal(size=(37, 5))
    means = bootstrap_means(d, 2500, 11)  # three chunks of the generator
    idx = np.random.default_rng(11).integers(0, 37, size=(2500, 37))
    assert np.abs(means - d[idx].mean(axis=1)).max() < 1e-12


def test_columns_are_each_columns_own_statistics():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 6)), rng.normal(size=(15, 6))
    y[:, 2] = x[:, 2]  # all differences zero: no test
    x[:, 3] = np.arange(15) * 0.25
    y[:, 3] = x[:, 3] - 0.5  # an exactly constant difference: t is infinite
    cols = paired_columns(x, y, resamples=500, seed=2)
    for c in (0, 1, 4, 5):
        one = paired(x[:, c], y[:, c], resamples=500, seed=2)
        assert cols["t_p"][c] == pytest.approx(st.ttest_rel(x[:, c], y[:, c]).pvalue, rel=1e-12)
        assert cols["wilcoxon_p"][c] == pytest.approx(st.wilcoxon(x[:, c] - y[:, c]).pvalue, rel=1e-12)
        assert cols["d_z"][c] == pytest.approx(one.d_z, rel=1e-12)
        # the columns share the resamples, so each column's interval is its own bootstrap's
        assert (cols["ci_low"][c], cols["ci_high"][c]) == pytest.approx((one.ci_low, one.ci_high), abs=1e-12)
    assert np.isnan(cols["t_p"][2]) and np.isnan(cols["wilcoxon_p"][2]) and cols["mean"][2] == 0
    assert cols["t_p"][3] == 0 and np.isinf(cols["d_z"][3]) and cols["ci_low"][3] == pytest.approx(0.5)


def test_benjamini_hochberg_is_scipys_over_the_defined_p_values():
    p = np.array([0.001, 0.04, 0.03, np.nan, 0.5, 0.012, 0.2])
    q = bh(p)
    finite = np.isfinite(p)
    assert np.allclose(q[finite], st.false_discovery_control(p[finite], method="bh"), rtol=0, atol=1e-15)
    assert np.isnan(q[3])
    # by hand for the smallest: p_(1) * m / 1 with m = 6 defined values
    assert q[0] == pytest.approx(0.001 * 6)
    assert np.isnan(bh(np.array([np.nan]))).all()


def test_statistics_refuse_too_few_pairs_and_bad_settings():
    with pytest.raises(HeadmapError, match="at least 2 pairs"):
        paired(X[:1], Y[:1])
    with pytest.raises(HeadmapError, match="confidence"):
        paired(X, Y, confidence=1.5)
    with pytest.raises(HeadmapError, match="resample"):
        paired(X, Y, resamples=0)
    text = paired(X, Y, resamples=200).describe()
    assert "95% CI [" in text and "t-test p = " in text and "12 pairs" in text


def test_pairs_all_and_matched_samples():
    assert make_pairs(2, 3).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    matched = make_pairs(6, 8, count=5, seed=4)
    assert len(matched) == 5 and len(set(matched[:, 0])) == 5 and len(set(matched[:, 1])) == 5
    assert matched.tolist() == make_pairs(6, 8, count=5, seed=4).tolist()  # seeded
    assert matched.tolist() != make_pairs(6, 8, count=5, seed=5).tolist()
    many = make_pairs(4, 5, count=13, seed=0)
    assert len({tuple(p) for p in many}) == 13 and many[:, 0].max() < 4 and many[:, 1].max() < 5
    with pytest.raises(HeadmapError, match="1..20"):
        make_pairs(4, 5, count=21)
    assert "independent" in pairing(matched, 6, 8) and "not independent" not in pairing(matched, 6, 8)
    assert "not independent" in pairing(make_pairs(3, 3), 3, 3) and "N <= 3" in pairing(
        make_pairs(3, 3), 3, 3
    )


def test_top_heads_and_controls_follow_the_stated_rules():
    name = np.random.default_rng(0).random((6, 3, 4))  # [prompt, layer, head]
    a, b = np.array([0, 1, 2]), np.array([3, 4, 5])
    scores = name_scores(name, a, b)
    assert np.allclose(scores, np.mean([(name[i] + name[j]) / 2 for i, j in zip(a, b)], axis=0))
    top = top_cells(scores, 3)
    flat = sorted((-scores[li, h], li, h) for li in range(3) for h in range(4))[:3]
    assert top == [(li, h) for _, li, h in flat]
    assert top_cells(np.zeros((2, 2)), 3) == [(0, 0), (0, 1), (1, 0)]  # ties: layer, then head order
    sets = control_cells((3, 4), top, 3, 4, seed=9)
    assert len(sets) == 4 and all(len(set(s)) == 3 and not set(s) & set(top) for s in sets)
    assert sets == control_cells((3, 4), top, 3, 4, seed=9)
    assert control_cells((3, 4), top, 3, 0, seed=9) == []
    with pytest.raises(HeadmapError, match="control set"):
        control_cells((2, 2), [(0, 0), (0, 1), (1, 0)], 3, 1, seed=0)


def test_template_fill_locates_names_and_evidence():
    t = check_template(
        "Dear {name}: ten years {x} in accounting. Hire {name}?", "ten years {x} in accounting"
    )
    text, names, evidence = t.fill("Mary Ann")
    assert text == "Dear Mary Ann: ten years {x} in accounting. Hire Mary Ann?"
    assert [text[a:b] for a, b in names] == ["Mary Ann", "Mary Ann"]
    assert text[evidence[0] : evidence[1]] == "ten years {x} in accounting"
    t = check_template("Work: ten years. {name} {name} asks.", "ten years")
    text, names, evidence = t.fill("Bo")
    assert text[evidence[0] : evidence[1]] == "ten years" and [text[a:b] for a, b in names] == ["Bo", "Bo"]


@pytest.mark.parametrize(
    "template,evidence,message",
    [
        ("no slot here", "slot", "no {name} slot"),
        ("{name} works", "", "evidence phrase is empty"),
        ("{name} works hard and works", "works", "occurs 2 times"),
        ("{name} works", "sleeps", "does not occur"),
        ("{name} works", "e} works", "overlaps the {name} slot"),
        ("{name} works", "{name}", "contains {name}"),
    ],
)
def test_template_errors_name_the_fix(template, evidence, message):
    with pytest.raises(HeadmapError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_template(template, evidence)


def test_names_files_and_groups(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("# source: ours, CC0\n\nAnna\n  Mary Ann  \n# more\nBo\n", encoding="utf-8")
    assert read_names(path) == ("Anna", "Mary Ann", "Bo")
    twice = tmp_path / "twice.txt"
    twice.write_text("Anna\nBo\nAnna\n", encoding="utf-8")
    with pytest.raises(HeadmapError, match=r"twice.txt, line 3: the name 'Anna' is already on line 1"):
        read_names(twice)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(HeadmapError, match="holds no name"):
        read_names(empty)
    with pytest.raises(HeadmapError, match="does not exist"):
        read_names(tmp_path / "missing.txt")
    with pytest.raises(HeadmapError, match=".txt file"):
        read_names(tmp_path / "names.csv")
    a, b = as_groups({"A": path, "B": ["Carl", "Dan"]})
    assert (a.label, a.names, b.names) == ("A", ("Anna", "Mary Ann", "Bo"), ("Carl", "Dan"))
    with pytest.raises(HeadmapError, match="exactly two groups"):
        as_groups({"A": ["x"]})
    with pytest.raises(HeadmapError, match="in both groups"):
        as_groups({"A": ["Anna", "Bo"], "B": ["Bo"]})
    with pytest.raises(HeadmapError, match="twice"):
        as_groups({"A": ["Anna", "Anna"], "B": ["Bo"]})
    with pytest.raises(HeadmapError, match="several lines"):
        as_groups({"A": ["An\nna"], "B": ["Bo"]})
    with pytest.raises(HeadmapError, match="not the string"):
        as_groups({"A": "Anna", "B": ["Bo"]})
