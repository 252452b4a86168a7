"""The API serves a bundled model by its name, offline: ``mmphi serve --model mmphi/tiny-phi-base``."""

from __future__ import annotations

import time

import httpx

from mmphi.serve.api import create_app
from mmphi.serve.background import serve_in_thread
from mmphi.serve.config import ServeConfig


def test_the_api_serves_the_bundled_base_by_name_and_it_answers_from_a_description():
    app = create_app(ServeConfig(model="mmphi/tiny-phi-base", max_new_tokens=4))
    with serve_in_thread(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").status_code != 200:  # the model loads in the background
            assert time.monotonic() < deadline, httpx.get(url + "/health").text
            time.sleep(0.1)
        question = "What colour is the circle?\nA small blue square at the top and a large red circle on the left."
        r = httpx.post(url + "/v1/chat/completions", timeout=60,
                       json={"model": "mmphi", "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip() == "red"
