"""Corpus reports: exact combination of per-text sums, head distances, resuming, files and pictures."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tokens_from
from scipy.spatial.distance import jensenshannon
from tiny_models import build

import headmap.analysis.engines as engines_module  # corpus jobs call stats_partial there
from headmap.analysis.compute import CorpusCollector
from headmap.analysis.corpus import corpus_from_texts
from headmap.analysis.partials import CORPUS_STATS, Partial, ReportSpec, combine, pack_upper
from headmap.analysis.report import head_report
from headmap.analysis.stats import collect_stats
from headmap.capture import Block, CapturePlan, capture
from headmap.errors import HeadmapError
from headmap.result import LayerKey, Stack

TEXTS = [
    "The trophy didn't fit in the suitcase because it was too big.",
    "A cat sat.",
    "Rivers rise after the long rain, and the farmers move their cattle uphill before dawn.",
    "Why did the council refuse the permit?",
    "Put the kettle on.",
]


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    return {name: build(name, bert_tokenizer)[0] for name in ("bert", "llama")}


def hand_counts(special: tuple[bool, ...], causal: bool) -> dict[str, int]:
    """Rows each statistic averages over, for one text of ``n`` tokens, written out by hand."""
    n = len(special)
    plain = sum(not s for s in special) or n
    return {
        "entropy": n,
        "entropy_norm": n - 1 if causal else n,
        "distance": n,
        "first_share": n,
        "special_share": n,
        "confidence": plain,
        "prev_share": n - 1,
        "diag_share": n,
        "next_share": n - 1,
    }


def next_share(maps: np.ndarray) -> np.ndarray:
    """``[head]`` mean weight on the next token, from full ``[head, row, key]`` maps."""
    n = maps.shape[1]
    return maps[:, np.arange(n - 1), np.arange(1, n)].mean(1)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_corpus_means_are_per_text_statistics_combined_by_hand(tiny, arch):
    model = tiny[arch]
    report = head_report(model, TEXTS, batch_size=2)
    per_text = collect_stats(model, TEXTS)
    maps = capture(model, TEXTS)
    table = report.table
    for name in CORPUS_STATS:
        values, weights = [], []
        for stats, result in zip(per_text, maps):
            counts = hand_counts(stats.tokens.special, causal=arch == "llama")
            if name == "next_share":
                value = np.stack([next_share(layer.weights.astype(np.float64)) for layer in result.layers])
            else:
                value = stats.stat(name)
            values.append(value)
            weights.append(counts[name])
        values_ = np.stack(values)  # [text, layer, head]
        w = np.array(weights, dtype=np.float64)[:, None, None]
        expected_mean = (values_ * w).sum(0) / w.sum()
        expected_std = values_.std(0, ddof=1)
        got = table[name].to_numpy().reshape(expected_mean.shape)
        np.testing.assert_allclose(got, expected_mean, atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(
            table[f"{name}_std"].to_numpy().reshape(expected_mean.shape),
            expected_std,
            atol=1e-6,
            rtol=0,
            err_msg=name,
        )
    assert (table["n_texts"] == len(TEXTS)).all()
    assert (table["n_rows"] == sum(len(s.tokens) for s in per_text)).all()
    assert report.combined.n_tokens == sum(len(s.tokens) for s in per_text)


def test_head_distances_match_scipy_on_full_maps(tiny):
    model = tiny["llama"]
    report = head_report(model, TEXTS, batch_size=3)
    results = capture(model, TEXTS)
    labels = report.spec.head_labels()
    expected = np.zeros((len(labels), len(labels)))
    for result in results:
        rows = [
            (layer.weights[h].astype(np.float64))
            for layer in result.layers
            for h in range(layer.weights.shape[0])
        ]
        for a in range(len(rows)):
            for b in range(len(rows)):
                # scipy returns the square root of the divergence; natural log by default.
                expected[a, b] += sum(jensenshannon(p, q) ** 2 for p, q in zip(rows[a], rows[b]))
    expected /= len(results)
    got = report.distances
    assert list(got.index) == labels == list(got.columns)
    assert labels[:2] == ["layer.0/head.0", "layer.0/head.1"]
    np.testing.assert_allclose(got.to_numpy(), expected, atol=2e-6, rtol=0)
    assert np.all(np.diag(got.to_numpy()) == 0) and np.array_equal(got.to_numpy(), got.to_numpy().T)
    close = report.near_duplicates(3)
    best = np.unravel_index(np.argmin(expected + np.eye(len(labels)) * 1e9), expected.shape)
    assert {close.loc[0, "head_a"], close.loc[0, "head_b"]} == {labels[best[0]], labels[best[1]]}


def test_long_text_in_row_chunks_equals_one_pass(tiny, monkeypatch):
    import headmap.analysis.compute as compute

    model = tiny["llama"]
    long_text = " ".join(TEXTS)
    whole = head_report(model, [long_text])
    passes: list[object] = []
    original = compute.stream
    monkeypatch.setattr(compute, "stream", lambda *a, **k: passes.append(k["rows"]) or original(*a, **k))
    chunked = head_report(model, [long_text], budget_bytes=8 * 4 * 7 * 70)  # a few rows per forward
    assert len(passes) > 3 and all(isinstance(r, slice) for r in passes)
    for name in CORPUS_STATS:
        np.testing.assert_allclose(chunked.table[name], whole.table[name], atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(chunked.combined.distances, whole.combined.distances, atol=1e-6, rtol=0)


def split(partial: Partial) -> list[Partial]:
    """One partial per text (stats only: distances are summed per group)."""
    return [
        Partial(
            indices=partial.indices[i : i + 1],
            digests=partial.digests[i : i + 1],
            n_tokens=partial.n_tokens[i : i + 1],
            sums=partial.sums[i : i + 1],
            counts=partial.counts[i : i + 1],
        )
        for i in range(len(partial.indices))
    ]


class Recording:
    """The local engine, keeping every partial it makes."""

    def __init__(self) -> None:
        self.made: list[Partial] = []

    def partials(self, loaded, jobs, work):
        from headmap.analysis.engines import LocalEngine

        for partial in LocalEngine().partials(loaded, jobs, work):
            self.made.append(partial)
            yield partial


def test_combine_is_pure_and_independent_of_order_and_grouping(tiny):
    recording = Recording()
    report = head_report(tiny["bert"], TEXTS, batch_size=2, engine=recording)
    made = recording.made
    spec = report.spec
    shuffled = made[:]
    random.Random(1).shuffle(shuffled)
    again = combine(shuffled, spec)
    for name in CORPUS_STATS:
        assert np.array_equal(again.mean[name], report.combined.mean[name])
        assert np.array_equal(again.std[name], report.combined.std[name], equal_nan=True)
    assert np.array_equal(again.distances, report.combined.distances)
    stats_only = dataclasses.replace(spec, diversity=False)
    grouped = combine([dataclasses.replace(p, js=None) for p in made], stats_only)
    singles = [s for p in made for s in split(p)]
    random.Random(2).shuffle(singles)
    apart = combine(singles, stats_only)
    for name in CORPUS_STATS:
        assert np.array_equal(apart.mean[name], grouped.mean[name]), name
        assert np.array_equal(apart.std[name], grouped.std[name], equal_nan=True), name
    # Plain arrays in and out: what a worker process would send back.
    restored = [Partial.from_arrays(p.arrays(), p.digests) for p in made]
    assert np.array_equal(combine(restored, spec).distances, report.combined.distances)
    with pytest.raises(HeadmapError, match="appears in two partial results"):
        combine(made + made[:1], spec)
    assert spec == ReportSpec.from_json(spec.to_json())


def test_resume_after_interruption_loses_nothing(tiny, monkeypatch, tmp_path):
    model = tiny["llama"]
    texts = TEXTS * 3  # 15 texts, groups of 4
    full = head_report(model, texts, batch_size=4)
    calls: list[int] = []
    original = engines_module.stats_partial

    def interrupted(loaded, group, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third group runs
        calls.append(len(group))
        return original(loaded, group, *args, **kwargs)

    monkeypatch.setattr(engines_module, "stats_partial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        head_report(model, texts, batch_size=4, out=tmp_path / "rep")
    kept = sorted(p.name for p in (tmp_path / "rep" / "partials").iterdir())
    assert kept == ["stats-0000000-0000003.safetensors", "stats-0000004-0000007.safetensors"]
    assert not (tmp_path / "rep" / "heads.csv").exists()

    computed: list[int] = []
    monkeypatch.setattr(
        engines_module,
        "stats_partial",
        lambda loaded, group, *a, **k: (
            computed.extend(t.index for t in group) or original(loaded, group, *a, **k)
        ),
    )
    resumed = head_report(model, texts, batch_size=4, out=tmp_path / "rep")
    assert computed == list(range(8, 15))  # only the texts not finished before
    pd.testing.assert_frame_equal(resumed.table, full.table, check_exact=True)
    assert np.array_equal(resumed.combined.distances, full.combined.distances)
    computed.clear()
    head_report(model, texts, batch_size=4, out=tmp_path / "rep")
    assert computed == []  # a finished report reruns from its partials alone

    with pytest.raises(HeadmapError, match="layers: .* there, .* now"):
        head_report(model, texts, layers=[0], out=tmp_path / "rep")
    changed = texts[:5] + ["A different fifth text."] + texts[6:]
    with pytest.raises(HeadmapError, match=r"different corpus \(text 5 changed\)"):
        head_report(model, changed, batch_size=4, out=tmp_path / "rep")
    (tmp_path / "rep" / "partials" / "stats-0000000-0000003.safetensors").write_bytes(
        b"not a safetensors file"
    )
    with pytest.raises(HeadmapError, match="unreadable.*delete it"):
        head_report(model, texts, batch_size=4, out=tmp_path / "rep")


def test_fewer_texts_than_before_reuse_what_fits(tiny, tmp_path):
    model = tiny["bert"]
    head_report(model, TEXTS, batch_size=2, out=tmp_path / "r")
    fewer = head_report(model, TEXTS, max_texts=3, batch_size=2, out=tmp_path / "r")
    direct = head_report(model, TEXTS[:3], batch_size=2)
    pd.testing.assert_frame_equal(fewer.table, direct.table, check_exact=True)


def test_saved_folder_and_page(tiny, tmp_path):
    report = head_report(tiny["llama"], TEXTS, out=tmp_path / "rep")
    folder = tmp_path / "rep"
    names = {p.name for p in folder.iterdir()}
    expected = {
        "heads.csv",
        "heads.parquet",
        "distances.csv",
        "near_duplicates.csv",
        "report.html",
        "profile.png",
        "roles.png",
        "dendrogram.png",
        "mds.png",
        "partials",
        *(f"stat_{s}.png" for s in CORPUS_STATS),
    }
    assert expected <= names
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(folder / "heads.csv")
    assert list(csv.columns[:4]) == ["layer", "head", "n_texts", "n_rows"] and csv.columns[-1] == "role"
    assert {f"{s}_std" for s in CORPUS_STATS} <= set(csv.columns)
    np.testing.assert_allclose(csv["entropy"], report.table["entropy"], rtol=1e-12)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "heads.parquet"), report.table)
    distances = pd.read_csv(folder / "distances.csv", index_col=0)
    assert list(distances.index) == list(distances.columns) == report.spec.head_labels()
    np.testing.assert_allclose(distances.to_numpy(), report.combined.distances, rtol=1e-12)
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "correlation, not causation" in page and "Read each value against its depth" in page
    assert "Gu et al. 2025" in page and "Clark et al. 2019" in page
    assert page.count("data:image/png;base64,") == len(list(folder.glob("*.png")))
    assert "<script" not in page and 'src="http' not in page
    assert report.render(tmp_path / "again.html").read_text(encoding="utf-8").count(
        "data:image/png"
    ) == page.count("data:image/png")
    with pytest.raises(HeadmapError, match="renders to .html"):
        report.render(tmp_path / "x.png")
    assert "<table" in report._repr_html_() and "correlation, not causation" in report._repr_html_()


def test_page_escapes_names(tiny):
    report = head_report(tiny["bert"], TEXTS[:2], diversity=False)
    hostile = dataclasses.replace(
        report,
        combined=dataclasses.replace(
            report.combined, spec=dataclasses.replace(report.spec, model="<script>alert(1)</script>")
        ),
    )
    page = hostile.to_html()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert hostile.distances is None
    with pytest.raises(HeadmapError, match="no head distances"):
        hostile.plot_mds()


def test_bad_input_errors(tiny, tmp_path):
    model = tiny["bert"]
    with pytest.raises(HeadmapError, match="text 1 is empty"):
        head_report(model, ["fine", ""])
    too_long = "word " * 80  # the tiny BERT takes 64 positions
    with pytest.raises(
        HeadmapError, match=r"text 1: the text has \d+ tokens but this model accepts at most 64"
    ):
        head_report(model, ["fine", too_long])
    (tmp_path / "file").write_text("x")
    with pytest.raises(HeadmapError, match="is a file, not a folder"):
        head_report(model, ["fine"], out=tmp_path / "file")
    with pytest.raises(HeadmapError, match="unknown statistic"):
        head_report(model, ["fine"], diversity=False).plot_stat("nonsense")
    assert corpus_from_texts(["fine"])[0].origin == "text 0"


def known_block(weights: torch.Tensor, rows: torch.Tensor) -> Block:
    """A block as the capture hands it over, built from chosen ``[head, row, key]`` weights."""
    lowest = torch.finfo(torch.float32).min
    scores = weights.log().clamp(min=lowest)
    return Block(
        weights=weights,
        rows=rows,
        visible=(weights > 0).sum(-1).amax(0),
        scores_max=scores.amax(-1),
        scores=scores,
        causal=True,
    )


def test_known_distributions_through_the_collector():
    """Head 0 spreads each row uniformly over the keys it sees (entropy log(r + 1) at row r), head 1
    puts everything on the previous token (row 0 on itself): values known in closed form."""
    key = LayerKey(Stack.SELF, 0)
    lengths = (5, 3)
    texts = ["a b c d e", "f g h"]
    tokens = [tokens_from(t, [(i, i + 1) for i in range(0, len(t), 2)]) for t in texts]
    plan = CapturePlan(
        model="hand",
        layers=(key,),
        heads=(0, 1),
        sources=tuple(tokens),
        targets=(None, None),
        rows=tuple({key: tuple(range(n))} for n in lengths),
        num_layers={Stack.SELF: 1},
        num_heads=2,
    )
    collector = CorpusCollector(diversity=True)
    collector.begin(plan)
    for item, n in enumerate(lengths):
        w = torch.zeros(2, n, n)
        for r in range(n):
            w[0, r, : r + 1] = 1.0 / (r + 1)
            w[1, r, max(r - 1, 0)] = 1.0
        for start in range(n):  # one row per block, as long inputs arrive
            collector.consume(
                item, key, start, known_block(w[:, start : start + 1, : start + 1], torch.tensor([start]))
            )
    spec = ReportSpec("hand", ("layer.0",), (0, 1))
    parts = []
    for item, n in enumerate(lengths):
        sums, counts = collector.text_sums(item)
        parts.append(
            Partial(
                indices=np.array([item]),
                digests=(str(item),),
                n_tokens=np.array([n]),
                sums=sums[None],
                counts=counts[None],
                js=pack_upper(collector.js[item]),
            )
        )
    c = combine(parts, spec)
    rows_total = sum(lengths)
    entropy = sum(math.log(r + 1) for n in lengths for r in range(n)) / rows_total
    assert c.mean["entropy"][0, 0] == pytest.approx(entropy, abs=1e-6)
    assert c.mean["entropy"][0, 1] == pytest.approx(0.0, abs=1e-6)
    # Normalized entropy of a uniform row is 1, over the rows that see more than one key.
    assert c.mean["entropy_norm"][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert c.mean["prev_share"][0, 1] == 1.0 and c.mean["diag_share"][0, 1] == pytest.approx(2 / rows_total)
    assert c.mean["first_share"][0, 0] == pytest.approx(
        sum(1 / (r + 1) for n in lengths for r in range(n)) / rows_total
    )
    assert c.mean["next_share"][0, 0] == 0.0 and c.mean["distance"][0, 1] == pytest.approx(
        (rows_total - 2) / rows_total
    )
    per_text = [sum(math.log(r + 1) for r in range(n)) / n for n in lengths]
    assert c.std["entropy"][0, 0] == pytest.approx(np.std(per_text, ddof=1), abs=1e-6)
    # Distance of the two heads: JS per row, summed over rows, averaged over the two texts.
    js_rows = [
        sum(jensenshannon(np.full(r + 1, 1 / (r + 1)), np.eye(r + 1)[max(r - 1, 0)]) ** 2 for r in range(n))
        for n in lengths
    ]
    assert c.distances[0, 1] == pytest.approx(np.mean(js_rows), abs=1e-6)


def test_pictures_are_a_type_and_the_string_form_warns(tiny, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from headmap.analysis import Picture

    report = head_report(tiny["llama"], TEXTS[:2], diversity=False)
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf().axes[0].get_title()))
    report.show(Picture.STAT_ENTROPY)
    with pytest.warns(DeprecationWarning, match="Picture.STAT_ENTROPY"):
        report.show("stat_entropy")
    assert len(shown) == 2 and shown[0] == shown[1]
    with pytest.raises(HeadmapError, match="unknown picture 'nope'"):
        report.show("nope")
    assert Picture.STAT_ENTROPY.stat == "entropy" and Picture.ROLES.stat is None
    path = report.save(tmp_path / "roles.png", picture=Picture.ROLES)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert report.save(tmp_path / "rep") == tmp_path / "rep" and (tmp_path / "rep" / "report.html").exists()
    plt.close("all")
