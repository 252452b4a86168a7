"""The inference engine on a tiny random multimodal model: streaming, history, bad input, audio."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from mmphi.infer.assistant import Assistant
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import ImageError, InputError, Message, PromptTooLong


@pytest.fixture(scope="module")
def assistant(tiny_mm_dir) -> Assistant:
    return Assistant.load(tiny_mm_dir, device=None)


@pytest.fixture(scope="module")
def scene(small_world):
    return next((small_world / "test" / "images").iterdir())


def test_streaming_equals_non_streaming_greedy(assistant, scene):
    msgs = [Message("user", "What colour is the circle?", image=scene)]
    params = GenerationParams(max_new_tokens=12)
    events = list(assistant.stream(msgs, params))
    streamed = "".join(e.text for e in events if e.kind == "token")
    reply = assistant.reply(msgs, params)
    assert events[-1].kind == "done" and reply.tokens > 0
    assert streamed.rstrip() == reply.text == events[-1].reply.text
    assert reply.finish_reason in ("stop", "length")


def test_kv_cache_and_full_recomputation_give_the_same_greedy_tokens(assistant, scene):
    from mmphi.infer.generate import greedy_by_recomputing, stream_tokens

    rounds, image, _, _, _ = assistant._rounds([Message("user", "Describe the image.", image=scene)])
    ex, _ = assistant._fit(rounds, 0, 100)
    embeds = assistant._embeds(ex, image)
    params = GenerationParams(max_new_tokens=10, min_new_tokens=10)
    cached = list(stream_tokens(assistant.lm, embeds, params, 50256, 50256))
    recomputed = greedy_by_recomputing(assistant.lm, embeds, 10, 50256, min_new_tokens=10)
    assert cached == recomputed and len(cached) == 10


def test_multi_turn_history_is_in_the_prompt(assistant, scene):
    history = [Message("user", "What colour is the circle?", image=scene), Message("assistant", "red"),
               Message("user", "And the square?")]
    rounds, _, _, _, _ = assistant._rounds(history)
    ex, _ = assistant._fit(rounds, 0, 100)
    text = assistant.tokenizer.decode(ex.input_ids)
    assert text.endswith("ASSISTANT: red<|endoftext|>USER: And the square? ASSISTANT:")
    assert sum(ex.image_mask) == assistant.model.image_tokens
    assert assistant.reply(history, GenerationParams(max_new_tokens=3)).prompt_tokens == len(ex)


def test_sampling_is_reproducible_with_a_seed(assistant):
    msgs = [Message("user", "Say something.")]
    a = assistant.reply(msgs, GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50, seed=3))
    b = assistant.reply(msgs, GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50, seed=3))
    assert a.text == b.text


def test_stop_event_cancels_generation(assistant):
    stop = threading.Event()
    tokens = 0
    for event in assistant.stream([Message("user", "Count to a hundred.")], GenerationParams(max_new_tokens=60),
                                  stop=stop):
        if event.kind == "token":
            tokens += 1
            stop.set()
        if event.kind == "done":
            assert event.reply.finish_reason == "cancelled" and event.reply.tokens < 60
    assert tokens >= 1


@pytest.mark.parametrize("message, error, text", [
    (Message("user", "   "), InputError, "empty message"),
    (Message("user", "hi", image=b"this is not an image"), ImageError, "not an image"),
    (Message("user", "hi", image=b""), ImageError, "empty"),
    (Message("user", "hi", image="/no/such/file.png"), ImageError, "not found"),
])
def test_bad_input_is_a_clear_error(assistant, message, error, text):
    with pytest.raises(error, match=text):
        assistant.reply([message])


def test_absurdly_large_image_is_refused_before_decoding(assistant):
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")  # 81 megapixels, a few KB compressed
    with pytest.raises(ImageError, match="megapixels"):
        assistant.reply([Message("user", "hi", image=buf.getvalue())])


def test_truncated_image_is_refused(assistant, scene):
    data = scene.read_bytes()
    with pytest.raises(ImageError):
        assistant.reply([Message("user", "hi", image=data[: len(data) // 2])])


def test_over_long_prompt(assistant, scene):
    long = "word " * 200  # the tiny model's context is 128 tokens
    with pytest.raises(PromptTooLong, match="context of 128"):
        assistant.reply([Message("user", long)])
    # Old rounds go first, never the one holding the image.
    history = [Message("user", "Look.", image=scene), Message("assistant", "ok"),
               Message("user", "Some words " * 15), Message("assistant", "fine " * 8), Message("user", "Colour?")]
    reply = assistant.reply(history, GenerationParams(max_new_tokens=64))
    assert reply.dropped_rounds == 1 and reply.warnings


def test_conversation_shape_errors(assistant):
    with pytest.raises(InputError, match="end with a user"):
        assistant.reply([Message("user", "a"), Message("assistant", "b")])
    with pytest.raises(InputError, match="in a row"):
        assistant.reply([Message("user", "a"), Message("user", "b")])


def test_spoken_question_returns_what_was_heard(assistant, small_world):
    import json

    item = json.loads((small_world / "test" / "speech.json").read_text())[0]
    events = list(assistant.stream([Message("user", image=small_world / "test" / "images" / item["image"],
                                            audio=small_world / "test" / item["audio"])],
                                   GenerationParams(max_new_tokens=4)))
    heard = [e.text for e in events if e.kind == "transcript"]
    assert len(heard) == 1 and events[-1].reply.transcripts == heard
    words = set(item["question"].lower().replace("?", "").split())
    assert len(words & set(heard[0].lower().replace("?", "").replace(".", "").split())) >= len(words) // 2


def test_silent_audio_is_a_clear_error(assistant, tmp_path):
    import wave

    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 16000)
    from mmphi.audio import NoSpeechError

    with pytest.raises(NoSpeechError, match="no speech"):
        assistant.reply([Message("user", audio=path)])


def test_streamed_deltas_add_up_to_the_reply_without_the_leading_space(assistant, scene, monkeypatch):
    # BPE answers start with a space token (" yellow"); a client joining the deltas must get the reply's text.
    ids = assistant.tokenizer(" yellow and blue").input_ids

    class Tokens(list):  # what the engine's generator hands back: token ids (EOS excluded), then a finish reason
        finish = "stop"

        def close(self) -> None:
            pass

    monkeypatch.setattr(assistant.generator, "submit", lambda *args, **kwargs: Tokens(ids))
    events = list(assistant.stream([Message("user", "What colour?", image=scene)], GenerationParams(max_new_tokens=12)))
    deltas = [e.text for e in events if e.kind == "token"]
    assert "".join(deltas) == events[-1].reply.text == "yellow and blue"
    assert all(deltas)


def test_describe_first_answers_after_the_models_own_description(tiny_mm_dir, scene, monkeypatch):
    from mmphi.chat import DESCRIBE

    describing = Assistant.load(tiny_mm_dir, device=None, describe_first=True)
    submitted = []
    real = describing.generator.submit
    monkeypatch.setattr(describing.generator, "submit", lambda embeds, *a, **k: submitted.append(embeds) or
                        real(embeds, *a, **k))
    encoded = []
    real_encode = describing.encoder.encode
    monkeypatch.setattr(describing.encoder, "encode", lambda rounds, image, *rest: encoded.append(list(rounds)) or
                        real_encode(rounds, image, *rest))
    params = GenerationParams(max_new_tokens=4)
    events = list(describing.stream([Message("user", "What colour is the circle?", image=scene)], params))
    kinds = [e.kind for e in events]
    assert kinds[0] == "description" and kinds[-1] == "done" and "description" not in kinds[1:]
    reply = events[-1].reply
    assert reply.description == events[0].text and len(submitted) == 2  # the description, then the answer
    asked = encoded[-1]
    assert asked[0] == (f"<image>\n{DESCRIBE}", reply.description) and asked[1] == ("What colour is the circle?", None)
    # A follow-up about the same image reuses the description; text-only turns get none.
    again = describing.reply([Message("user", "And the square?", image=scene)], params)
    assert again.description == reply.description and len(submitted) == 3
    plain = list(describing.stream([Message("user", "Hi.")], params))
    assert "description" not in [e.kind for e in plain] and plain[-1].reply.description is None
