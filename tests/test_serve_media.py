"""The dashboard with images and clips: uploads keyed by their bytes, views that draw them, clear refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_audio import FRAMES, tone, whisper, write_wav  # noqa: F401  (fixture)
from test_serve import decode

import headmap
from headmap.analysis.alignment import alignment_heads, token_times, word_times
from headmap.capture.audio import Audio
from headmap.serve.display import ViewSpec
from headmap.serve.inputs import Modality
from headmap.serve.views import VIEWS, Request, head
from headmap.serve.views import time as time_view
from headmap.serve.workbench import Workbench

TRANSCRIPT = "the cat sat on the mat"


def ask(**changes) -> Request:  # type: ignore[no-untyped-def]
    base = dict(model="minilm", text="", layer=0, head=0, spec=ViewSpec(), cmap="viridis")
    return Request(**{**base, **changes})


def shown(bench: Workbench, label: str, request: Request, values=()) -> dict:  # type: ignore[no-untyped-def]
    """What the page would show for ``request`` in the view called ``label`` (a message on bad input)."""
    from headmap.serve.app import Layout, Shared, draw

    spans, start = [], 0
    for view in VIEWS:
        n = len(view.controls())
        spans.append((start, start + n))
        start += n
    layout = Layout(VIEWS, tuple(spans))
    extras: list[object] = [None] * start
    index, _ = layout.view(label)
    extras[spans[index][0] : spans[index][0] + len(values)] = list(values)
    shared = Shared(
        model=request.model,
        text=request.text,
        layer=request.layer,
        head=request.head,
        words=False,
        mask_special=False,
        mask_first=False,
        renorm=False,
        norm="raw",
        cmap=request.cmap,
        image=request.image,
        audio=request.audio,
        resample=request.resample,
    )
    return draw(bench, layout, label, [*shared.items(), *extras])


@pytest.fixture(scope="module")
def image_bench(digits_vit):  # type: ignore[no-untyped-def]
    return Workbench(["minilm"], loader=lambda name, **_: digits_vit)


def test_an_image_model_draws_the_uploaded_image(image_bench, digits_vit, digit_png, tmp_path):
    assert image_bench.info("minilm").modality is Modality.IMAGE
    request = ask(image=str(digit_png), layer=2, head=1)
    payload = head.draw(image_bench, request, ())
    direct = headmap.capture(digits_vit, image=digit_png).layer(2).weights[1]
    (sent,) = decode(payload)
    assert sent.shape == (17, 17) and np.abs(sent - direct).max() <= (direct.max() - direct.min()) / 65535
    assert payload["rows"][0] == "CLS [0]" and payload["cols"][5] == "p(1,0) [5]"
    # The same bytes under another path (a second upload) are the same capture: keyed by content.
    copy = shutil.copy(digit_png, tmp_path / "again.png")
    before = image_bench.captures.stats.misses
    head.draw(image_bench, ask(image=str(copy), layer=0, head=0), ())
    assert image_bench.captures.stats.misses == before


def test_image_model_refusals_are_one_line(image_bench, tmp_path):
    cases = {
        "upload an image (PNG, JPEG...) on the left": ("single head", ask()),
        "cannot read": ("single head", ask(image=str(tmp_path / "bad.png"))),
        "the explanation view does not; choose single head, all heads of a layer, over the image": (
            "explanation",
            ask(image="x.png"),
        ),
        "the over time view does not": ("over time", ask(image="x.png")),
    }
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    for needle, (label, request) in cases.items():
        payload = shown(image_bench, label, request)
        assert payload["kind"] == "message" and needle in payload["message"], (needle, payload)


def test_a_text_model_refuses_the_image_and_time_views(minilm):
    bench = Workbench(["minilm"], loader=lambda name, **_: minilm)
    for label in ("over the image", "over time"):
        payload = shown(bench, label, ask(text="A short text."))
        assert payload["kind"] == "message" and "minilm takes text: the " + label in payload["message"]


@pytest.fixture(scope="module")
def speech_bench(whisper):  # type: ignore[no-untyped-def]
    return Workbench(["minilm"], loader=lambda name, **_: whisper[0])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("clips")
    return write_wav(folder / "tone.wav", tone(), 16000), write_wav(
        folder / "fast.wav", tone(rate=8000), 8000
    )


def test_time_view_draws_the_alignment_heads_of_the_clip(speech_bench, whisper, clips):
    assert speech_bench.info("minilm").modality is Modality.AUDIO
    request = ask(audio=str(clips[0]), text=TRANSCRIPT)
    payload = time_view.draw(speech_bench, request, (time_view.Source.ALIGNMENT.value,))
    direct = headmap.capture(whisper[0], clips[0], target=TRANSCRIPT)
    best = alignment_heads(direct, top=time_view.TOP_HEADS)
    audible = direct.source.frames.audible
    expected = np.mean([direct.layer(a.key).head(a.head) for a in best], axis=0)[:, :audible]
    (sent,) = decode(payload)
    assert sent.shape == expected.shape and audible == 30 < FRAMES  # 0.6 s of 1 s: the silence is cut
    assert np.abs(sent - expected).max() <= (expected.max() - expected.min()) / 65535 + 1e-9
    assert payload["cols"][:2] == ["0.00 s", "0.02 s"] and payload["rows"][1].endswith("[1]")
    for a in best:
        assert f"{a.key.name} h{a.head} ({a.score:.2f})" in payload["caption"][0]
    # Word spans: Whisper's preparation of the same heads, then DTW, tokens merged into words.
    times = token_times(
        np.stack([direct.layer(a.key).head(a.head)[:, :audible] for a in best]), direct.source.frames.seconds
    )
    words = word_times(direct.target, times)
    assert [w.word for w in words] == TRANSCRIPT.split()
    assert f"{words[1].word} {words[1].start:.2f}-{words[1].end:.2f} s" in payload["caption"][1]
    chosen = time_view.draw(
        speech_bench,
        ask(audio=str(clips[0]), text=TRANSCRIPT, layer=5, head=2),
        (time_view.Source.CHOSEN.value,),
    )
    one = direct.layer("cross.1").head(2)[:, :audible]
    assert np.abs(decode(chosen)[0] - one).max() <= (one.max() - one.min()) / 65535 + 1e-9
    assert chosen["caption"][0].startswith("cross-attention layer 1 · head 2 (alignment score")


def test_clip_refusals_and_resampling(speech_bench, whisper, clips):
    payload = shown(speech_bench, "over time", ask(audio=str(clips[1]), text=TRANSCRIPT))
    assert payload["kind"] == "message" and "at 8000 Hz but" in payload["message"]
    assert "takes 16000 Hz: tick 'resample the clip to the model's rate'" in payload["message"]
    wrong_layer = shown(
        speech_bench, "over time", ask(audio=str(clips[0]), layer=0), (time_view.Source.CHOSEN.value,)
    )
    assert (
        "layer 0 is cross.0" not in wrong_layer["message"]
        and "not a cross-attention layer" in wrong_layer["message"]
    )
    assert "move the layer slider to one of" in wrong_layer["message"]
    missing = shown(speech_bench, "over time", ask(text=TRANSCRIPT))
    assert "upload a WAV clip" in missing["message"]
    resampled = time_view.draw(
        speech_bench,
        ask(audio=str(clips[1]), text=TRANSCRIPT, resample=True),
        (time_view.Source.ALIGNMENT.value,),
    )
    direct = headmap.capture(whisper[0], Audio.read(clips[1], rate=16000), target=TRANSCRIPT)
    best = alignment_heads(direct, top=time_view.TOP_HEADS)
    expected = np.mean([direct.layer(a.key).head(a.head) for a in best], axis=0)
    expected = expected[:, : direct.source.frames.audible]
    assert np.abs(decode(resampled)[0] - expected).max() <= (expected.max() - expected.min()) / 65535 + 1e-9


def test_uploads_are_bounded(digits_vit, digit_png):
    bench = Workbench(["minilm"], loader=lambda name, **_: digits_vit, max_upload_bytes=100)
    payload = shown(bench, "single head", ask(image=str(digit_png)))
    assert "this server takes at most" in payload["message"] and "upload a smaller file" in payload["message"]


def test_a_page_for_an_image_model_starts_on_its_view(image_bench):
    from headmap.serve.app import build_app

    demo = build_app(image_bench)
    found = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert found["hm-view"].value == "over the image" and found["hm-image"].visible
    assert not found["hm-text"].visible and not found["hm-audio"].visible
    assert not found["hm-words"].interactive and found["hm-cmap"].interactive is not False


def test_depth_view_gives_an_image_model_its_patch_statistics(image_bench, digits_vit, digit_png):
    from headmap.analysis.patch_stats import patch_stats
    from headmap.serve.views import depth

    table = depth.draw(image_bench, ask(image=str(digit_png)), ("cls_share",))
    expected = patch_stats(digits_vit, [digit_png]).cls_share
    sent = np.asarray(table["panels"][0]["values"], dtype=float).reshape(expected.shape)
    np.testing.assert_allclose(sent, expected, rtol=1e-7)
    assert table["rows"] == ["layer 0", "layer 1", "layer 2"] and "over 17 units" in table["caption"][0]
    refused = shown(image_bench, "layer-depth statistics", ask(image=str(digit_png)), ("first_share",))
    assert "first_share is a statistic of text: for images choose from entropy" in refused["message"]
