"""Throughput and latency of ``mmphi serve`` at 1, 4 and 16 concurrent clients, measured side by side in one run.

The server (``run_serve``: the real FastAPI app under uvicorn, in its own process, on a loopback
port) answers one request at a time, so more clients should not raise requests/s much; they queue,
and latency grows with the line.
This measures how much, and that nothing fails on the way. Every client sends the same request
(an image + a question, greedy, a fixed number of new tokens), back to back.

    .venv/bin/python bench/serve_load.py                       # a tiny random model built in a temp dir
    .venv/bin/python bench/serve_load.py runs/demo/finetune/final --requests 64 --max-tokens 16
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent


def tiny_model(out: Path) -> Path:
    """A random tiny multimodal model, built exactly as the tests build theirs (tests/helpers.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_clip, make_multimodal

    return make_multimodal(out, make_clip(out / "clip"))


def scene_png() -> str:
    """A shapes-world-like 64x64 scene as a data URL (no world needed)."""
    img = Image.new("RGB", (64, 64), (240, 240, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((6, 20, 26, 40), fill=(220, 30, 30))
    draw.rectangle((38, 20, 58, 40), fill=(30, 60, 220))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@contextmanager
def server_process(model: str, queue_size: int) -> Iterator[str]:
    """``run_serve`` in its own process (as in production), so the load generator does not share its GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from mmphi.serve.api import run_serve; from mmphi.serve.config import ServeConfig; "
            "run_serve(ServeConfig(model=sys.argv[1], port=int(sys.argv[2]), queue_size=int(sys.argv[3])))")
    proc = subprocess.Popen([sys.executable, "-c", code, model, str(port), str(queue_size)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health").status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not come up (exit code {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Level:
    """Everything measured at one concurrency level, pooled over the rounds."""

    clients: int
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0

    def row(self, base: Level) -> str:
        lat = sorted(self.latencies)
        p50, p95 = statistics.median(lat), lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        errors = sum(s != 200 for s in self.statuses)
        rps = len(lat) / self.wall_s
        return (f"| {self.clients} | {len(lat)} | {errors} | {rps:.1f} | {self.tokens / self.wall_s:.0f} | "
                f"{p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | {rps / (len(base.latencies) / base.wall_s):.2f}x | "
                f"{p50 / statistics.median(base.latencies):.1f}x |")


def run_round(url: str, body: dict, level: Level, requests: int) -> None:
    """``requests`` requests spread over the level's clients (threads), each sending back to back."""
    lock = threading.Lock()
    per_client = [requests // level.clients + (i < requests % level.clients) for i in range(level.clients)]

    def client(n: int) -> None:
        with httpx.Client(timeout=600) as http:
            for _ in range(n):
                start = time.perf_counter()
                r = http.post(url + "/v1/chat/completions", json=body)
                took = time.perf_counter() - start
                with lock:
                    level.latencies.append(took)
                    level.statuses.append(r.status_code)
                    level.tokens += r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0

    start = time.perf_counter()
    with ThreadPoolExecutor(level.clients) as pool:
        list(pool.map(client, per_client))
    level.wall_s += time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="", help="model folder; default: a tiny random model")
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients per level")
    parser.add_argument("--requests", type=int, default=64, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per answer")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds the requests are split into")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    if args.requests // args.rounds < max(levels):
        parser.error("need requests / rounds >= the most clients, or some clients would have nothing to send")

    with tempfile.TemporaryDirectory(prefix="mmphi-bench-") as tmp:
        model = args.model or str(tiny_model(Path(tmp)))
        body = {"model": "mmphi", "max_tokens": args.max_tokens, "temperature": 0, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                         {"type": "image_url", "image_url": {"url": scene_png()}}]}]}
        with server_process(model, max(levels)) as url:
            run_round(url, body, Level(1), 3)  # warm-up (first-call allocations)
            # Rounds interleave the levels, so that a change in the machine's load hits all of them alike.
            rows = [Level(c) for c in levels]
            for _ in range(args.rounds):
                for level in rows:
                    run_round(url, body, level, args.requests // args.rounds)
    print(f"\nmmphi serve on {'a tiny random model' if not args.model else args.model}: "
          f"{args.requests // args.rounds * args.rounds} requests per level in {args.rounds} interleaved rounds, "
          f"image + question, {args.max_tokens} new tokens, greedy\n")
    print("| clients | requests | errors | req/s | tokens/s | p50 latency | p95 latency | req/s vs 1 | p50 vs 1 |")
    print("|--------:|---------:|-------:|------:|---------:|------------:|------------:|-----------:|---------:|")
    for level in rows:
        print(level.row(rows[0]))
    return 1 if any(s != 200 for level in rows for s in level.statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
