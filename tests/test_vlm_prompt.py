"""A vision-language model's prompt: a text holding the image token, with an image, loaded from a folder,
captured from ``capture(model, text, image=...)``, the command line and the dashboard alike."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import transformers
from test_vlm import _config, picture
from tiny_models import twins
from transformers import ViTImageProcessorPil

import headmap
from headmap.capture.vlm import vlm_input
from headmap.errors import HeadmapError
from headmap.serve.display import ViewSpec
from headmap.serve.inputs import Modality
from headmap.serve.views import Request, head
from headmap.serve.workbench import Workbench

PROMPT = "look at <image> is it bright ?"


@pytest.fixture(scope="module")
def folder(bert_tokenizer, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A tiny LLaVA saved as a model folder: safetensors weights, a tokenizer that knows ``<image>``,
    and an image processor (what `headmap.load` reads)."""
    tokenizer = copy.deepcopy(bert_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = _config(vocab=len(tokenizer), image_token=tokenizer.convert_tokens_to_ids("<image>"))
    model, _ = twins(transformers.AutoModelForImageTextToText, config, 0.3)
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava(folder):  # type: ignore[no-untyped-def]
    return headmap.load(str(folder))


@pytest.fixture(scope="module")
def image(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("img") / "bright.png"
    picture().save(path)
    return path


def test_a_folder_loads_with_its_image_processor(llava):
    assert llava.processor is not None and type(llava.model).__name__ == "LlavaForConditionalGeneration"


def test_a_prompt_with_an_image_is_the_exact_input(llava, image):
    result = headmap.capture(llava, PROMPT, image=image)
    ids = llava.tokenizer(PROMPT)["input_ids"]
    at = ids.index(llava.model.config.image_token_id)
    direct = headmap.capture(llava, vlm_input(llava, image, ids[:at], ids[at + 1 :]))
    assert result.source.tokens == direct.source.tokens and result.source.tokens[0] == "[CLS]"
    assert result.source.tokens[at : at + 2] == ("p(0,0)", "p(0,1)") and result.source.tokens[-1] == "[SEP]"
    for mine, theirs in zip(result.layers, direct.layers):
        np.testing.assert_array_equal(mine.weights, theirs.weights)
    assert result.source.patches.grid == (4, 4) and len(result.source) == len(ids) - 1 + 16


def test_prompts_are_checked(llava, image, digits_vit_model, minilm):
    with pytest.raises(HeadmapError, match=r"holds the image token '<image>' 0 times: put it once"):
        headmap.capture(llava, "no image token here", image=image)
    with pytest.raises(HeadmapError, match="2 times"):
        headmap.capture(llava, "<image> and <image>", image=image)
    with pytest.raises(
        HeadmapError, match="is no vision-language model: give it a text or an image, not both"
    ):
        headmap.capture(minilm, "a text", image=image)
    with pytest.raises(HeadmapError, match="is no vision-language model"):
        headmap.capture(digits_vit_model, "a text", image=image)


@pytest.fixture(scope="module")
def digits_vit_model():  # type: ignore[no-untyped-def]
    return headmap.load("digits-vit")


def test_cli_draws_the_last_text_token_over_the_image(folder, image, tmp_path):
    out = tmp_path / "over.png"
    run = [sys.executable, "-m", "headmap", "render", "-m", str(folder), "--image", str(image), PROMPT]
    done = subprocess.run(
        [*run, "--layer", "1", "--head", "2", "--query", "-1", "-o", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 5000 and "wrote" in done.stdout
    bad = subprocess.run([*run[:-1], "no token", "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 1 and "0 times" in bad.stderr and "Traceback" not in bad.stderr


def test_dashboard_takes_the_text_and_the_upload(llava, image):
    bench = Workbench(["minilm"], loader=lambda name, **_: llava)
    assert bench.info("minilm").modality is Modality.IMAGE_TEXT
    request = Request("minilm", PROMPT, 1, 2, ViewSpec(), "viridis", image=str(image))
    payload = head.draw(bench, request, ())
    expected = headmap.capture(llava, PROMPT, image=image).layer(1).weights[2]
    codes = np.frombuffer(payload["data"]["codes"], dtype="<u2").astype(np.float64)
    lo, hi = payload["data"]["lo"][0], payload["data"]["hi"][0]
    sent = (lo + codes * (hi - lo) / 65535).reshape(expected.shape)
    assert np.abs(sent - expected).max() <= (hi - lo) / 65535
    with pytest.raises(HeadmapError, match="upload an image"):
        head.draw(bench, Request("minilm", PROMPT, 0, 0, ViewSpec(), "viridis"), ())
    with pytest.raises(HeadmapError, match="type the text"):
        head.draw(bench, Request("minilm", " ", 0, 0, ViewSpec(), "viridis", image=str(image)), ())
