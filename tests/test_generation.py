"""Explained generations: every number against a direct computation on the generated sequence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import build

from headmap.attribution.generation import prompt_ids, trace_generation
from headmap.attribution.generation_report import GenerationReport, explain_generation
from headmap.errors import HeadmapError
from headmap.view.words import word_groups

PROMPT = "The trophy did not fit in the suitcase"


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    fast, eager = build("llama", bert_tokenizer)
    return fast, eager


def _log_softmax(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)


def test_every_number_equals_a_direct_computation(tiny):
    fast, eager = tiny
    report = explain_generation(fast, PROMPT, max_new_tokens=4)
    t = report.trace
    prompt = prompt_ids(fast, PROMPT, chat=False)
    with torch.no_grad():  # greedy: the model's own generate
        direct = fast.model.generate(
            torch.tensor([prompt.ids]),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long),
        )
    assert list(t.generated_ids) == direct[0, len(prompt.ids) :].tolist()
    full = list(prompt.ids) + list(t.generated_ids)
    n, g = len(prompt.ids), len(t.generated_ids)
    logp = _log_softmax(fast.model, full)
    np.testing.assert_allclose(
        t.logprobs, [float(logp[n - 1 + i, tok]) for i, tok in enumerate(t.generated_ids)], atol=1e-5
    )
    # Attention: the eager model's own last-layer weights at the predicting rows, head mean, per word.
    with torch.no_grad():
        maps = eager(input_ids=torch.tensor([full]), output_attentions=True).attentions[-1][0].double()
    groups = word_groups(prompt.tokens)
    for i in range(g):
        row = maps[:, n - 1 + i, :n].mean(0)
        np.testing.assert_allclose(t.attention[i], [float(row[list(w)].sum()) for w in groups], atol=1e-5)
    # Occlusion of one word: the drop of every generated token's log p without it.
    w = 2
    kept = [tok for j, tok in enumerate(prompt.ids) if j not in set(groups[w])] + list(t.generated_ids)
    shorter = _log_softmax(fast.model, kept)
    m = len(kept) - g
    expected = [
        float(logp[n - 1 + i, tok] - shorter[m - 1 + i, tok]) for i, tok in enumerate(t.generated_ids)
    ]
    np.testing.assert_allclose(t.occlusion[:, w], expected, atol=1e-5)
    assert np.isnan(t.occlusion[:, 0]).all()  # [CLS]: special tokens frame the input, never removed
    from scipy.stats import spearmanr

    ok = ~np.isnan(t.occlusion[0])
    assert t.agreement[0] == pytest.approx(spearmanr(t.attention[0][ok], t.occlusion[0][ok]).statistic)


def test_sampling_is_seeded_and_leaves_the_global_generator_alone(tiny):
    fast, _ = tiny
    state = torch.random.get_rng_state()
    first = trace_generation(fast, PROMPT, settings=_settings(temperature=1.5, seed=7), occlusion=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = trace_generation(fast, PROMPT, settings=_settings(temperature=1.5, seed=7), occlusion=False)
    assert first.generated_ids == again.generated_ids and first.occlusion is None


def _settings(**options):
    from headmap.attribution.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=5, **options)


def test_the_report_keeps_the_contract_and_escapes_tokens(tiny, tmp_path):
    fast, _ = tiny
    report = explain_generation(fast, "<script>alert(1)</script> fit", max_new_tokens=2)
    assert isinstance(report, GenerationReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["settings"]["decoding"] == "greedy" and len(data["attention"]) == 2
    page = report.save(tmp_path / "g.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "correlation, not causation" in page
    assert report.save(tmp_path / "g.png").stat().st_size > 1000
    table = report.to_pandas()
    assert len(table) == 2 * len(report.trace.words)


def test_encoders_and_bad_settings_get_one_clear_message(bert_tokenizer):
    encoder = build("bert", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match="does not generate|no language-model head"):
        explain_generation(encoder, PROMPT)
    decoder = build("llama", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match="chat template"):
        explain_generation(decoder, PROMPT, chat=True)
    with pytest.raises(HeadmapError, match="empty"):
        explain_generation(decoder, "  ")


@pytest.mark.slow
def test_smollm2_names_the_capital_and_needs_the_country(smollm2):
    report = explain_generation(smollm2, "The capital of France is", max_new_tokens=2)
    t = report.trace
    assert t.generated[0] == " Paris"
    drops = dict(zip((w.strip() for w in t.words), t.occlusion[0], strict=True))
    assert drops["France"] > 1.0  # without the country, " Paris" loses more than a nat
    chat = explain_generation(smollm2, "Name a color.", max_new_tokens=3, chat=True, occlusion=False)
    assert "<|im_start|>" in chat.trace.prompt.text
