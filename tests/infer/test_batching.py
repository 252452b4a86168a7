"""The continuous-batching scheduler: answers in a batch equal answers alone, rows come and go."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmphi.infer.assistant import Assistant
from mmphi.infer.batching import BatchedGenerator
from mmphi.infer.generate import GenerationParams, greedy_by_recomputing
from mmphi.infer.inputs import Message

QUESTIONS = ["What colour is the circle?", "Describe the image.", "How many shapes are there?",
             "Is there a red square?", "Where is the blue triangle?", "Say something.",
             "What shape is on the left of the picture, and what colour is it?", "Hi."]


@pytest.fixture(scope="module")
def assistant(tiny_mm_dir) -> Assistant:
    return Assistant.load(tiny_mm_dir, device=None)


@pytest.fixture(scope="module")
def prompts(assistant, small_world):
    """16 mixed prompts as embeddings: with and without an image, 8 lengths, multi-turn."""
    images = sorted((small_world / "test" / "images").iterdir())
    out = []
    for i in range(16):
        q = QUESTIONS[i % len(QUESTIONS)]
        msgs = [Message("user", q, image=images[i % len(images)] if i % 3 else None)]
        if i % 5 == 4:
            msgs = [Message("user", "Look.", image=images[0]), Message("assistant", "I see shapes."), msgs[-1]]
        rounds, image, _, _, _ = assistant._rounds(msgs)
        ex, _ = assistant._fit(rounds, 0 if image is not None else None, 100)
        out.append(assistant._embeds(ex, image))
    assert len({p.shape[1] for p in out}) >= 6  # the prompts really differ in length: padding is exercised
    return out


def test_sixteen_mixed_prompts_in_one_batch_equal_each_alone(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=16)
    # Different lengths, so rows leave the batch at different steps while others go on.
    params = [GenerationParams(max_new_tokens=4 + i % 7, min_new_tokens=4 + i % 7) for i in range(16)]
    alone = [greedy_by_recomputing(assistant.lm, p, q.max_new_tokens, 50256, q.min_new_tokens)
             for p, q in zip(prompts, params, strict=True)]
    runs = [gen.submit(p, q) for p, q in zip(prompts, params, strict=True)]  # all queued before the first step
    batched = [list(r) for r in runs]
    assert batched == alone
    assert all(r.finish == "length" for r in runs)
    assert gen.steps < sum(len(a) for a in alone)  # they really were decoded together


def test_requests_that_arrive_mid_generation_join_the_batch_and_stay_exact(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=16)
    params = GenerationParams(max_new_tokens=12, min_new_tokens=12)
    alone = [greedy_by_recomputing(assistant.lm, p, 12, 50256, 12) for p in prompts[:8]]
    first = [gen.submit(p, params) for p in prompts[:4]]
    head = iter(first[0])
    got0 = [next(head) for _ in range(3)]  # the first rows are decoding; now more arrive
    later = [gen.submit(p, params) for p in prompts[4:8]]
    got = [got0 + list(head)] + [list(r) for r in first[1:] + later]
    assert got == alone


def test_text_only_and_sampled_rows_mix_with_greedy_rows(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=8)
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    greedy = GenerationParams(max_new_tokens=8, min_new_tokens=8, repetition_penalty=1.3)
    alone_sampled = list(gen.submit(prompts[0], sampled))
    alone_greedy = list(gen.submit(prompts[1], greedy))
    together = [gen.submit(prompts[0], sampled), gen.submit(prompts[1], greedy),
                *(gen.submit(p, GenerationParams(max_new_tokens=6)) for p in prompts[2:6])]
    outs = [list(r) for r in together]
    assert outs[0] == alone_sampled  # a seeded sampler gives the same answer in any company
    assert outs[1] == alone_greedy and len(outs[1]) == 8


def test_a_consumer_that_leaves_frees_its_row(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=2)
    long = GenerationParams(max_new_tokens=100, min_new_tokens=100)
    a, b = gen.submit(prompts[0], long), gen.submit(prompts[1], long)
    next(iter(a))
    a.close()
    c = gen.submit(prompts[2], GenerationParams(max_new_tokens=3, min_new_tokens=3))
    assert len(list(c)) == 3  # it got a row although max_batch is 2 and b is still running
    b.close()
    deadline = time.monotonic() + 10
    while gen.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gen.running == 0 and a.finish == b.finish == "cancelled"


def test_stop_event_and_deadline_end_a_row(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=4)
    stop = threading.Event()
    stop.set()
    cancelled = gen.submit(prompts[0], GenerationParams(max_new_tokens=50), stop=stop)
    assert list(cancelled) == [] and cancelled.finish == "cancelled"
    late = gen.submit(prompts[1], GenerationParams(max_new_tokens=50), deadline=time.monotonic() - 1)
    assert list(late) == [] and late.finish == "time"
    soon = gen.submit(prompts[2], GenerationParams(max_new_tokens=10_000, min_new_tokens=10_000),
                      deadline=time.monotonic() + 0.3)
    tokens = list(soon)
    assert soon.finish == "time" and 0 < len(tokens) < 10_000


def test_one_at_a_time_when_max_batch_is_one(assistant, prompts):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=1)
    params = GenerationParams(max_new_tokens=5, min_new_tokens=5)
    runs = [gen.submit(p, params) for p in prompts[:3]]
    assert [list(r) for r in runs] == [greedy_by_recomputing(assistant.lm, p, 5, 50256, 5) for p in prompts[:3]]
    assert gen.steps == 3 * 4  # each request alone: one prefill and four decode steps


def test_assistant_answers_concurrent_threads_as_it_answers_one(assistant, small_world):
    images = sorted((small_world / "test" / "images").iterdir())
    convs = [[Message("user", QUESTIONS[i % len(QUESTIONS)], image=images[i % len(images)])] for i in range(8)]
    params = GenerationParams(max_new_tokens=6)
    alone = [assistant.reply(c, params).text for c in convs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda c: assistant.reply(c, params).text, convs))
    assert together == alone


def test_a_broken_forward_fails_its_rows_and_the_engine_goes_on(assistant, prompts, monkeypatch):
    gen = BatchedGenerator(assistant.lm, 50256, max_batch=4)
    real = gen._forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "_forward", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        list(gen.submit(prompts[0], GenerationParams(max_new_tokens=5, min_new_tokens=5)))
    assert list(gen.submit(prompts[1], GenerationParams(max_new_tokens=3, min_new_tokens=3)))  # still serving
