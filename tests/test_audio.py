"""Audio input (Whisper): reading clips, encoder frames with times, and capture parity with eager."""

from __future__ import annotations

import copy
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tiny_models import twins

import headmap
from headmap.analysis.alignment import alignment_heads, token_times
from headmap.capture.audio import Audio, read_wav
from headmap.capture.discovery import discover
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.render.frames import plot_cross_time
from headmap.render.report import save_figure
from headmap.tokens import Tokens

TOL = 1e-5
FRAMES = 50  # encoder frames: 100 mel frames, a 1 s window at Whisper's 10 ms hop
CONFIG = transformers.WhisperConfig(
    vocab_size=120,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_mel_bins=80,
    max_source_positions=FRAMES,
    max_target_positions=32,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
)


@pytest.fixture(scope="module")
def whisper(bert_tokenizer) -> tuple[LoadedModel, torch.nn.Module]:
    """``(fast, eager)``: a random tiny Whisper (SDPA) and its eager twin with the same weights."""
    config = copy.deepcopy(CONFIG)
    config.vocab_size = len(bert_tokenizer)  # the decoder reads the test tokenizer's ids
    fast, eager = twins(transformers.AutoModelForSpeechSeq2Seq, config, 0.3)
    # chunk_length 1: the extractor pads to 1 s, the 100 mel frames this model's 50 positions take.
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)
    return LoadedModel(model=fast, tokenizer=bert_tokenizer, name="tiny-whisper", processor=extractor), eager


def tone(seconds: float = 0.6, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, t.size)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((samples * 32767).astype(np.int16).tobytes())
    return path


def test_discovers_whisper_stacks(whisper):
    arch = discover(whisper[0].model)
    assert arch.audio_frames == FRAMES and arch.is_encoder_decoder and arch.num_heads == 4
    assert sorted(k.name for k in arch.sites) == [
        "cross.0", "cross.1", "decoder.0", "decoder.1", "encoder.0", "encoder.1",
    ]  # fmt: skip


def test_matches_eager(whisper):
    fast, eager = whisper
    clip = Audio(tone(), 16000, "tone")
    result = headmap.capture(fast, clip, target="the cat sat")
    features = fast.processor(clip.samples, sampling_rate=16000, return_tensors="pt")["input_features"]
    ids = [[1, *fast.tokenizer("the cat sat")["input_ids"]]]
    with torch.no_grad():
        out = eager(input_features=features, decoder_input_ids=torch.tensor(ids), output_attentions=True)
    reference = {
        "encoder": out.encoder_attentions,
        "decoder": out.decoder_attentions,
        "cross": out.cross_attentions,
    }
    assert {k.stack.value for k in result.keys} == set(reference)
    for layer in result.layers:
        expected = reference[layer.key.stack.value][layer.key.index][0].numpy()
        assert layer.weights.shape == expected.shape
        assert np.abs(layer.weights - expected).max() <= TOL, layer.key.name
        assert layer.weights.max() > 2.0 / layer.weights.shape[-1]
    assert result.layer("cross.1").weights.shape == (4, len(ids[0]), FRAMES)


def test_frames_are_units_with_times(whisper):
    result = headmap.capture(whisper[0], Audio(tone(0.6), 16000, "tone"), layers="cross.0")
    source = result.source
    assert source.unit == "frame" and len(source) == FRAMES
    assert source.frames is not None and source.frames.seconds == pytest.approx(0.02)
    assert source.tokens[:3] == ("0.00s", "0.02s", "0.04s") and source.tokens[21] == "0.42s"
    assert source.frames.audible == 30  # 0.6 s of sound, the rest of the 1 s window is padding
    assert source.frames.times(FRAMES)[-1] == pytest.approx(0.98)
    # No target: the decoder runs on its start token alone.
    assert result.layer("cross.0").weights.shape == (4, 1, FRAMES)
    assert Tokens.from_dict(source.to_dict()) == source


def test_wav_file_and_resampling(whisper, tmp_path):
    samples = tone(0.5, 8000)
    path = write_wav(tmp_path / "a.wav", samples, 8000)
    read, rate = read_wav(path)
    assert rate == 8000 and np.abs(read - samples).max() < 1e-4
    with pytest.raises(HeadmapError, match=r"a.wav is at 8000 Hz but tiny-whisper takes 16000 Hz: resample"):
        headmap.capture(whisper[0], path)
    clip = Audio.read(path, rate=16000)
    assert clip.rate == 16000 and clip.samples.size == 8000
    result = headmap.capture(whisper[0], clip, layers="encoder.0")
    assert result.source.frames.audible == 25 and result.source.text == "a.wav"


def test_bad_audio_inputs(whisper, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav at all")
    with pytest.raises(HeadmapError, match="cannot read .*broken.wav as a PCM WAV file"):
        headmap.capture(whisper[0], broken)
    with pytest.raises(HeadmapError, match="missing.wav does not exist"):
        headmap.capture(whisper[0], tmp_path / "missing.wav")
    with pytest.raises(HeadmapError, match="longer than tiny-whisper's 1 s window"):
        headmap.capture(whisper[0], Audio(tone(1.5), 16000))
    with pytest.raises(HeadmapError, match="takes audio, not text"):
        headmap.capture(whisper[0], "hello")


def test_audio_for_a_text_model(minilm):
    with pytest.raises(HeadmapError, match="takes no audio"):
        headmap.capture(minilm, Audio(tone(), 16000))


def test_a_batch_of_clips_matches_one_by_one(whisper):
    clips = [Audio(tone(0.3), 16000, "short"), Audio(tone(0.9) * 0.5, 16000, "long")]
    batched = headmap.capture(whisper[0], clips, target="a b", layers=["encoder.1", "cross.1"], batch_size=2)
    for clip, together in zip(clips, batched):
        alone = headmap.capture(whisper[0], clip, target="a b", layers=["encoder.1", "cross.1"])
        assert together.source.text == clip.name
        for a, b in zip(alone.layers, together.layers):
            assert np.abs(a.weights - b.weights).max() <= TOL


def test_cross_attention_over_time_picture(whisper, tmp_path):
    result = headmap.capture(
        whisper[0], Audio(tone(0.6), 16000, "tone"), target="the $cat", layers=["cross.0", "cross.1"]
    )
    best = alignment_heads(result, top=2)
    assert len(best) == 2 and 0.0 < best[1].score <= best[0].score <= 1.0
    layer = result.layer(best[0].key)
    weights = layer.head(best[0].head)[:, :30]
    times = token_times(weights, seconds=0.02)
    assert times.shape == (len(result.target), 2) and np.all(np.diff(times[:, 0]) >= 0)
    for fmt, magic in [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")]:
        fig = plot_cross_time(result, best[0].key, best[0].head, times=times)
        drawn = fig.axes[0].images[0].get_array()
        assert drawn.shape == (len(result.target), 30) and np.allclose(drawn, weights)
        save_figure(fig, tmp_path / f"cross.{fmt}")
        assert (tmp_path / f"cross.{fmt}").read_bytes().startswith(magic)
    mean = plot_cross_time(result, "cross.0").axes[0].images[0].get_array()
    assert np.allclose(mean, result.layer("cross.0").weights.mean(axis=0)[:, :30])
    with pytest.raises(HeadmapError, match="no cross-attention layer"):
        encoder = headmap.capture(whisper[0], Audio(tone(0.6), 16000), target="a", layers="encoder.0")
        plot_cross_time(encoder, "encoder.0")


def test_folder_and_cli(whisper, tmp_path):
    fast, _ = whisper
    folder = tmp_path / "whisper"
    fast.model.save_pretrained(folder)
    fast.tokenizer.save_pretrained(folder)
    fast.processor.save_pretrained(folder)
    loaded = headmap.load(str(folder))
    assert type(loaded.model).__name__ == "WhisperForConditionalGeneration" and loaded.processor is not None
    wav = write_wav(tmp_path / "clip.wav", tone(0.5), 16000)
    direct = headmap.capture(fast, wav, target="the cat", layers="cross.1")
    again = headmap.capture(loaded, wav, target="the cat", layers="cross.1")
    assert np.abs(direct.layers[0].weights - again.layers[0].weights).max() <= TOL
    run = [sys.executable, "-m", "headmap.cli", "capture", "-m", str(folder), "--target", "the cat"]
    out = tmp_path / "clip.safetensors"
    done = subprocess.run([*run, "--audio", str(wav), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    saved = headmap.load_result(out)
    assert saved.source.frames == direct.source.frames and saved.source.tokens[21] == "0.42s"
    assert np.abs(saved.layer("cross.1").weights - direct.layers[0].weights).max() <= TOL
    slow = write_wav(tmp_path / "slow.wav", tone(0.5, 8000), 8000)
    done = subprocess.run([*run, "--audio", str(slow), "-o", str(out)], capture_output=True, text=True)
    assert (
        done.returncode != 0 and "takes 16000 Hz: resample" in done.stderr and "Traceback" not in done.stderr
    )
