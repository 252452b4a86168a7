"""The API serves a bundled model by its name, offline: ``mmphi serve --model mmphi/tiny-phi-base``."""

from __future__ import annotations

import httpx

from conftest import _running
from mmphi.serve.api import create_app
from mmphi.serve.config import ServeConfig


def test_the_api_serves_the_bundled_base_by_name_and_it_answers_from_a_description():
    app = create_app(ServeConfig(model="mmphi/tiny-phi-base", max_new_tokens=4))
    with _running(app, wait=True) as url:
        question = "What colour is the circle?\nA small blue square at the top and a large red circle on the left."
        r = httpx.post(url + "/v1/chat/completions", timeout=60,
                       json={"model": "mmphi", "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip() == "red"
