"""Concurrency: many clients at once, a full waiting line, clients that leave, a model still loading."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from mmphi.infer.assistant import Assistant

QUESTION = [{"role": "user", "content": "How many shapes are there?"}]


class Gated:
    """The real assistant behind a gate: each generation waits until the test opens it (timing made certain)."""

    def __init__(self, inner: Assistant) -> None:
        self.inner, self.gate, self.started = inner, threading.Event(), threading.Semaphore(0)

    def stream(self, messages, params, stop=None, deadline=None):
        self.started.release()
        assert self.gate.wait(30)
        yield from self.inner.stream(messages, params, stop, deadline)


class Slow:
    """The real assistant with a slow token rate (as a big model would have), recording the stop events it got."""

    def __init__(self, inner: Assistant, delay_s: float) -> None:
        self.inner, self.delay_s, self.stops, self.tokens = inner, delay_s, [], 0

    def stream(self, messages, params, stop=None, deadline=None):
        self.stops.append(stop)
        for event in self.inner.stream(messages, params, stop, deadline):
            if event.kind == "token":
                self.tokens += 1
                time.sleep(self.delay_s)
            yield event


def test_sixteen_concurrent_clients(server):
    """16 clients at once (half streaming): no 5xx, and every answer is the complete greedy answer."""
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)
    reference = client.chat.completions.create(model="mmphi", messages=QUESTION, max_tokens=8)

    def one(i: int) -> tuple[str, str | None]:
        if i % 2:
            chunks = list(client.chat.completions.create(model="mmphi", messages=QUESTION, max_tokens=8,
                                                         stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text.strip(), chunks[-1].choices[0].finish_reason
        r = client.chat.completions.create(model="mmphi", messages=QUESTION, max_tokens=8)
        return r.choices[0].message.content, r.choices[0].finish_reason

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))  # any 4xx/5xx would raise here
    assert answers == [(reference.choices[0].message.content, reference.choices[0].finish_reason)] * 16
    health = httpx.get(server + "/health").json()
    assert health["failed"] == 0 and health["refused_busy"] == 0 and health["running"] == 0


def test_full_queue_gives_fast_503s_with_retry_after(start_server):
    gated: list[Gated] = []
    with start_server(wrap=lambda a: gated.append(Gated(a)) or gated[0], max_batch=1, queue_size=1) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 2}
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=30)
            assert gated[0].started.acquire(timeout=10)  # the first one holds the model
            waiting = pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=30)
            deadline = time.monotonic() + 10
            while httpx.get(url + "/health").json()["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            for _ in range(3):  # the line (queue_size 1) is full: refused at once
                start = time.perf_counter()
                r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
                assert r.status_code == 503 and time.perf_counter() - start < 1.0
                assert r.json()["error"]["code"] == "queue_full" and int(r.headers["Retry-After"]) >= 1
            health = httpx.get(url + "/health").json()
            assert health["running"] == 1 and health["waiting"] == 1
            gated[0].gate.set()
            assert running.result().status_code == 200 and waiting.result().status_code == 200
        health = httpx.get(url + "/health").json()
        assert health["refused_busy"] == 3 and health["completed"] == 2
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 200  # free again


@pytest.mark.parametrize("stream", [True, False])
def test_client_leaving_stops_its_generation(start_server, stream):
    slow: list[Slow] = []
    with start_server(wrap=lambda a: slow.append(Slow(a, 0.1)) or slow[0]) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 60, "stream": stream}
        if stream:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                assert next(r.iter_lines()).startswith("data: ")  # the stream is under way; now the client goes
        else:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting and closes the connection
                httpx.post(url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").json()["cancelled"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(url + "/health").json()
        assert health["cancelled"] == 1 and health["running"] == 0 and health["completed"] == 0
        assert slow[0].stops[0].is_set() and slow[0].tokens < 20  # 60 tokens would take 6 s


def test_health_is_503_while_the_model_loads(start_server, assistant):
    loaded = threading.Event()

    def slow_loader(_cfg):
        assert loaded.wait(30)
        return assistant

    with start_server(loader=slow_loader, wait=False) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(url + "/v1/chat/completions", json={"messages": QUESTION})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        loaded.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.post(url + "/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2}).status_code == 200


def test_a_model_that_fails_to_load_is_reported(start_server):
    def broken(_cfg):
        raise OSError("no config.json in /models/nope")

    with start_server(loader=broken, wait=False) as url:
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and "no config.json" in r.json()["error"]
        r = httpx.post(url + "/v1/chat/completions", json={"messages": QUESTION})
        assert r.status_code == 503 and "no config.json" in r.json()["error"]["message"]


def test_a_burst_beyond_the_limits_gets_answers_or_clean_503s(start_server):
    """24 clients at once against 2 batch rows + 2 queue places: each gets a 200 or a fast, well-formed 503."""
    slow: list[Slow] = []
    with start_server(wrap=lambda a: slow.append(Slow(a, 0.05)) or slow[0], max_batch=2, queue_size=2) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 6}

        def one(_: int) -> httpx.Response:
            return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(one, range(24)))  # nothing hangs: every call returns within its timeout
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(200) >= 4 and codes.count(503) >= 1
        for r in responses:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "server_error"
                assert int(r.headers["Retry-After"]) >= 1
            else:
                assert r.json()["choices"][0]["message"]["content"] is not None
        health = httpx.get(url + "/health").json()
        assert health["completed"] == codes.count(200) and health["refused_busy"] == codes.count(503)
        assert health["running"] == health["waiting"] == health["failed"] == 0
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 200  # and it goes on serving


def test_the_time_limit_cuts_an_answer_short(start_server, assistant, monkeypatch):
    real = assistant.generator._forward
    monkeypatch.setattr(assistant.generator, "_forward", lambda *a, **k: (time.sleep(0.05), real(*a, **k))[1])
    with start_server(timeout_s=1.0) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 60}
        for stream in (False, True):
            r = httpx.post(url + "/v1/chat/completions", json={**body, "stream": stream}, timeout=30)
            assert r.status_code == 200
            if not stream:
                assert r.json()["choices"][0]["finish_reason"] == "length"
                assert 0 < r.json()["usage"]["completion_tokens"] < 60  # 60 tokens at 0.05 s each take 3 s
            else:
                assert '"finish_reason":"length"' in r.text.replace(" ", "") and r.text.rstrip().endswith("[DONE]")
        assert httpx.get(url + "/health").json()["cut_by_time_limit"] == 2


def test_a_request_that_waits_its_whole_time_limit_gets_a_503(start_server):
    gated: list[Gated] = []
    with start_server(wrap=lambda a: gated.append(Gated(a)) or gated[0], max_batch=1, queue_size=4,
                      timeout_s=0.5) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 4}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=30)
            assert gated[0].started.acquire(timeout=10)  # the first holds the only row
            start = time.perf_counter()
            second = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
            assert second.status_code == 503 and second.json()["error"]["code"] == "queue_timeout"
            assert 0.4 < time.perf_counter() - start < 5 and int(second.headers["Retry-After"]) >= 1
            gated[0].gate.set()  # the first is past its time limit before its first token: a 503 as well
            assert first.result().status_code == 503
        health = httpx.get(url + "/health").json()
        assert health["timed_out"] == 2 and health["running"] == health["waiting"] == 0
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 200


def test_concurrent_requests_share_the_batch(start_server):
    gated: list[Gated] = []
    with start_server(wrap=lambda a: gated.append(Gated(a)) or gated[0], max_batch=4, queue_size=4) as url:
        body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 2}
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=30) for _ in range(6)]
            for _ in range(4):
                assert gated[0].started.acquire(timeout=10)  # four answers under way at once
            deadline = time.monotonic() + 10
            while httpx.get(url + "/health").json()["waiting"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            health = httpx.get(url + "/health").json()
            assert health["running"] == 4 and health["waiting"] == 2 and health["max_batch"] == 4
            gated[0].gate.set()
            assert [f.result().status_code for f in futures] == [200] * 6


def test_min_tokens_fixes_the_answer_length(server):
    body = {"model": "mmphi", "messages": QUESTION, "max_tokens": 7, "min_tokens": 7}
    r = httpx.post(server + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 7
    bad = httpx.post(server + "/v1/chat/completions", json={**body, "min_tokens": -1}, timeout=30)
    assert bad.status_code == 400
