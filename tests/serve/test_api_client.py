"""The API as users use it: the official ``openai`` Python client against a real server on a loopback port."""

from __future__ import annotations

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_plain_completion(client, assistant):
    r = client.chat.completions.create(model="mmphi", messages=[{"role": "user", "content": "How many shapes?"}],
                                       max_tokens=6)
    assert r.object == "chat.completion" and r.model == "mmphi" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # The same greedy answer the engine gives directly.
    from mmphi.infer.generate import GenerationParams
    from mmphi.infer.inputs import Message

    assert choice.message.content == assistant.reply([Message("user", "How many shapes?")],
                                                     GenerationParams(max_new_tokens=6)).text


def test_streaming_matches_the_plain_answer(client):
    messages = [{"role": "user", "content": "What colour is the circle?"}]
    plain = client.chat.completions.create(model="mmphi", messages=messages, max_tokens=10)
    stream = client.chat.completions.create(model="mmphi", messages=messages, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2  # it really streamed, token by token
    assert "".join(deltas).strip() == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_image_question(client, assistant, image_url):
    ask = [{"type": "text", "text": "What colour is the circle?"}]
    with_image = client.chat.completions.create(model="mmphi", max_tokens=4, messages=[
        {"role": "user", "content": [*ask, {"type": "image_url", "image_url": {"url": image_url}}]}])
    blind = client.chat.completions.create(model="mmphi", max_tokens=4, messages=[{"role": "user", "content": ask}])
    # The image took its placeholder positions in the prompt.
    assert with_image.usage.prompt_tokens >= blind.usage.prompt_tokens + assistant.model.image_tokens
    assert with_image.choices[0].message.content


def test_spoken_question_returns_the_transcript(client, spoken, heard_ok, image_url):
    r = client.chat.completions.create(model="mmphi", max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "input_audio", "input_audio": {"data": spoken["b64"], "format": "wav"}}]}])
    heard = r.mmphi["transcripts"]
    assert len(heard) == 1 and heard_ok(heard[0], spoken["question"]), (heard, spoken["question"])
    assert r.choices[0].message.content


def test_spoken_question_streamed_shows_the_transcript_before_the_answer(client, spoken, heard_ok):
    stream = client.chat.completions.create(model="mmphi", max_tokens=4, stream=True, messages=[
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": spoken["b64"],
                                                                               "format": "wav"}}]}])
    chunks = list(stream)
    first_token = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    heard = [i for i, c in enumerate(chunks) if (getattr(c, "mmphi", None) or {}).get("transcript")]
    assert heard and heard[0] < first_token
    assert heard_ok(chunks[heard[0]].mmphi["transcript"], spoken["question"])


def test_system_message_is_prepended_to_the_first_user_turn(client):
    user = {"role": "user", "content": "What shape is it?"}
    base = client.chat.completions.create(model="mmphi", max_tokens=2, messages=[user])
    with_system = client.chat.completions.create(model="mmphi", max_tokens=2, messages=[
        {"role": "system", "content": "Answer in one word."}, user])
    assert with_system.usage.prompt_tokens > base.usage.prompt_tokens


def test_multi_turn_history(client):
    r = client.chat.completions.create(model="mmphi", max_tokens=3, messages=[
        {"role": "user", "content": "What colour is the square?"}, {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And the circle?"}])
    single = client.chat.completions.create(model="mmphi", max_tokens=3, messages=[
        {"role": "user", "content": "And the circle?"}])
    assert r.usage.prompt_tokens > single.usage.prompt_tokens


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == ["mmphi"]
    assert client.models.retrieve("mmphi").id == "mmphi"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["failed"] == 0


def test_api_key(start_server, monkeypatch):
    monkeypatch.setenv("MMPHI_API_KEY", "s3cret")
    with start_server() as url:
        ok = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.chat.completions.create(model="mmphi", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices[0].message.content is not None
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="mmphi", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        r = httpx.get(url + "/v1/models")  # no key at all
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(url + "/health").status_code == 200  # health checks need no key


def test_describe_first_returns_what_the_model_saw(start_server, tiny_mm_dir, image_url):
    from mmphi.infer.assistant import Assistant

    def loader(cfg):
        return Assistant.load(tiny_mm_dir, describe_first=cfg.describe_first)

    with start_server(loader=loader, describe_first=True) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                                 {"type": "image_url", "image_url": {"url": image_url}}]}]
        r = client.chat.completions.create(model="mmphi", max_tokens=4, messages=messages)
        seen = r.mmphi["description"]
        assert isinstance(seen, str) and r.choices[0].message.content
        chunks = list(client.chat.completions.create(model="mmphi", max_tokens=4, messages=messages, stream=True))
        described = [c.mmphi["description"] for c in chunks if (getattr(c, "mmphi", None) or {}).get("description")]
        assert described[:1] == [seen]  # the same image: the same (cached) description, before the answer
        text = client.chat.completions.create(model="mmphi", max_tokens=4,
                                              messages=[{"role": "user", "content": "Hi."}])
        assert text.mmphi["description"] is None
