"""Throughput and latency of ``mmphi serve`` at 1, 4 and 16 concurrent clients, batched vs one at a time, in one run.

Two servers run side by side (``run_serve``: the real FastAPI app under uvicorn, each in its own
process on a loopback port): one with continuous batching (``max_batch`` 16, the default), one
with ``max_batch`` 1, which answers one request at a time. Rounds interleave the servers and the
levels, so a change in the machine's load hits all of them alike. Every client sends the same
request (an image + a question, greedy, a fixed number of new tokens, EOS suppressed so every
answer has that length), back to back. The batched server's answers are checked against the
one-at-a-time server's: they must be the same text.

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
def server_process(model: str, queue_size: int, max_batch: int) -> Iterator[str]:
    """``run_serve`` in its own process (as in production), so the load generator does not share its GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from mmphi.serve.api import run_serve; from mmphi.serve.config import ServeConfig; "
            "run_serve(ServeConfig(model=sys.argv[1], port=int(sys.argv[2]), queue_size=int(sys.argv[3]), "
            "max_batch=int(sys.argv[4])))")
    proc = subprocess.Popen([sys.executable, "-c", code, model, str(port), str(queue_size), str(max_batch)], cwd=ROOT,
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
    server: str = "batched"
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0
    answers: set[str] = field(default_factory=set)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s

    def row(self, base: Level, sequential: Level) -> str:
        lat = sorted(self.latencies)
        p50, p95 = statistics.median(lat), lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        errors = sum(s != 200 for s in self.statuses)
        return (f"| {self.server} | {self.clients} | {len(lat)} | {errors} | {self.rps:.1f} | "
                f"{self.tokens / self.wall_s:.0f} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | "
                f"{self.rps / base.rps:.2f}x | {self.rps / sequential.rps:.2f}x |")


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
                    if r.status_code == 200:
                        level.tokens += r.json()["usage"]["completion_tokens"]
                        level.answers.add(r.json()["choices"][0]["message"]["content"])

    start = time.perf_counter()
    with ThreadPoolExecutor(level.clients) as pool:
        list(pool.map(client, per_client))
    level.wall_s += time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="", help="model folder; default: a tiny random model")
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients per level")
    parser.add_argument("--requests", type=int, default=64, help="requests per level and server")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per answer")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds the requests are split into")
    parser.add_argument("--max-batch", type=int, default=16, help="the batched server's max_batch")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    if args.requests // args.rounds < max(levels):
        parser.error("need requests / rounds >= the most clients, or some clients would have nothing to send")

    with tempfile.TemporaryDirectory(prefix="mmphi-bench-") as tmp:
        model = args.model or str(tiny_model(Path(tmp)))
        body = {"model": "mmphi", "max_tokens": args.max_tokens, "temperature": 0,
                "min_tokens": args.max_tokens, "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                                 {"type": "image_url", "image_url": {"url": scene_png()}}]}]}
        with server_process(model, max(levels), args.max_batch) as batched, \
                server_process(model, max(levels), 1) as sequential:
            urls = {"batched": batched, "one at a time": sequential}
            for url in urls.values():
                run_round(url, body, Level(1), 3)  # warm-up (first-call allocations)
            rows = {(name, c): Level(c, name) for name in urls for c in levels}
            for _ in range(args.rounds):
                for (name, _c), level in rows.items():
                    run_round(urls[name], body, level, args.requests // args.rounds)
    print(f"\nmmphi serve on {'a tiny random model' if not args.model else args.model}: "
          f"{args.requests // args.rounds * args.rounds} requests per level and server in {args.rounds} interleaved "
          f"rounds, image + question, {args.max_tokens} new tokens, greedy; batched = max_batch {args.max_batch}\n")
    print("| server | clients | requests | errors | req/s | tokens/s | p50 latency | p95 latency | req/s vs 1 client "
          "| req/s vs one at a time |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for (name, c), level in rows.items():
        print(level.row(rows[(name, levels[0])], rows[("one at a time", c)]))
    answers = set().union(*(level.answers for level in rows.values()))
    print(f"\ndistinct answers across all {sum(len(v.latencies) for v in rows.values())} requests: {len(answers)} "
          f"({'the same text batched and one at a time' if len(answers) == 1 else 'MISMATCH: ' + repr(answers)})")
    failed = any(s != 200 for level in rows.values() for s in level.statuses)
    return 1 if failed or len(answers) != 1 else 0


if __name__ == "__main__":
    sys.exit(main())
