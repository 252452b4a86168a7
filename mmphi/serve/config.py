"""Settings of ``mmphi app`` (Gradio) and ``mmphi serve`` (OpenAI-compatible HTTP API).

Both bind to 127.0.0.1 by default: a model server is not something to expose to a network by
accident. Every limit below exists so that one bad or hostile request cannot take the server down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mmphi.config import check, opt
from mmphi.infer.config import ASR_MODEL_HELP, ASR_PROMPT_HELP, AUDIO_ROUTE_HELP, AudioRoute, GenerationArgs
from mmphi.infer.inputs import MAX_IMAGE_PIXELS

API_KEY_ENV = "MMPHI_API_KEY"


@dataclass
class AppConfig(GenerationArgs):
    model: str = opt("", "model folder: a stage-2 final/ (or merged/), a stage-1 final/, or a plain causal LM",
                     required=True)
    host: str = opt("127.0.0.1", "address to bind; 0.0.0.0 makes the app reachable from other machines")
    port: int = opt(7860, "port to listen on")
    max_upload_mb: float = opt(10.0, "largest file (image or audio) a user may upload, in MB")
    max_batch: int = opt(16, "most users answered at once, decoded together in one batch; 1 = one at a time")
    queue_size: int = opt(16, "most requests waiting for the model; beyond that users are told the app is busy")
    share: bool = opt(False, "also publish the app on a public gradio.live link (traffic goes through Gradio's "
                             "relay servers)")
    examples: str = opt("", "a shapes-world folder: a few of its test images and questions become clickable "
                            "examples; empty = text-only example questions")
    asr_model: str = opt("", ASR_MODEL_HELP)
    asr_prompt: str = opt("", ASR_PROMPT_HELP)
    audio_route: AudioRoute = opt("asr", AUDIO_ROUTE_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.model), "model is required (--model)")
        check(0 < self.port < 65536, f"port must be in 1..65535, got {self.port}")
        check(self.max_upload_mb > 0, f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        check(self.queue_size > 0, f"queue_size must be > 0, got {self.queue_size}")
        check(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")


@dataclass
class ServeConfig(GenerationArgs):
    model: str = opt("", "model folder: a stage-2 final/ (or merged/), a stage-1 final/, or a plain causal LM",
                     required=True)
    host: str = opt("127.0.0.1", "address to bind; 0.0.0.0 makes the API reachable from other machines "
                                 "(set an api_key then)")
    port: int = opt(8000, "port to listen on")
    api_key: str = opt("", f"require 'Authorization: Bearer KEY' on /v1/*; empty = the {API_KEY_ENV} environment "
                           "variable, or no key if that is unset too (prefer the variable: flags show up in ps)")
    model_name: str = opt("mmphi", "the model id clients pass as 'model' and /v1/models lists")
    max_body_mb: float = opt(25.0, "largest request body in MB (base64 images and audio inflate by 4/3)")
    max_pixels: int = opt(16_000_000, "largest image accepted, in pixels (width x height)")
    max_audio_seconds: float = opt(120.0, "longest audio accepted, in seconds")
    max_batch: int = opt(16, "most requests answered at once, decoded together in one batch; 1 = one at a time")
    queue_size: int = opt(16, "most requests waiting for a free place in the batch; beyond that: a fast 503 with "
                              "Retry-After")
    timeout_s: float = opt(120.0, "time limit per request, from its arrival: one still waiting then gets a 503, "
                                  "one being answered ends its answer there")
    allow_remote_images: bool = opt(False, "let the server fetch http(s) image URLs itself; off by default: "
                                           "a server that fetches any URL a client names can be made to probe "
                                           "its own network (SSRF)")
    asr_model: str = opt("", ASR_MODEL_HELP)
    asr_prompt: str = opt("", ASR_PROMPT_HELP)
    audio_route: AudioRoute = opt("asr", AUDIO_ROUTE_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.model), "model is required (--model)")
        check(0 < self.port < 65536, f"port must be in 1..65535, got {self.port}")
        check(bool(self.model_name), "model_name must not be empty")
        check(self.max_body_mb > 0, f"max_body_mb must be > 0, got {self.max_body_mb}")
        # The engine re-checks every image against MAX_IMAGE_PIXELS, so a larger limit here could not work.
        check(0 < self.max_pixels <= MAX_IMAGE_PIXELS, f"max_pixels must be in 1..{MAX_IMAGE_PIXELS}")
        check(self.max_audio_seconds > 0, f"max_audio_seconds must be > 0, got {self.max_audio_seconds}")
        check(self.queue_size >= 0, f"queue_size must be >= 0, got {self.queue_size}")
        check(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")
        check(self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}")

    def resolved_api_key(self) -> str:
        """The key clients must send: the setting, else the environment variable, else "" (no auth)."""
        return self.api_key or os.environ.get(API_KEY_ENV, "")
