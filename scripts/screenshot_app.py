"""Screenshot the Gradio app answering a question about an image, in headless Chromium (for docs/app.png).

    .venv/bin/python scripts/screenshot_app.py runs/demo/finetune/final \\
        runs/demo/world/test/images/test-000000.png docs/app.png "What colour is the circle?"

Launches the app on the model (loopback, a free port), uploads the image, asks the question, waits
until the answer has streamed in, saves the screenshot and prints the answer. Uses the system's
Chromium (/usr/bin/chromium, or $MMPHI_CHROMIUM), never a downloaded one.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (e.g. runs/demo/finetune/final)")
    parser.add_argument("image", help="image to ask about")
    parser.add_argument("out", help="where to save the PNG screenshot")
    parser.add_argument("question", help="the question to type")
    parser.add_argument("--examples", default="", help="shapes-world folder for the example row (optional)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not just the window")
    args = parser.parse_args(argv)
    for path in (args.model, args.image):
        if not Path(path).exists():
            print(f"screenshot_app: not found: {path}", file=sys.stderr)
            return 2

    from mmphi.infer.assistant import Assistant
    from mmphi.serve.app import build_app, launch
    from mmphi.serve.browser import ask, chromium_page, open_app
    from mmphi.serve.config import AppConfig

    cfg = AppConfig(model=args.model, port=_free_port(), examples=args.examples, max_new_tokens=args.max_new_tokens)
    demo = launch(build_app(Assistant.load(args.model), cfg), cfg, block=False)
    try:
        with chromium_page(args.width, args.height) as page:
            open_app(page, f"http://127.0.0.1:{cfg.port}/")
            exchange = ask(page, args.question, image=args.image, timeout_s=300)
            page.evaluate("() => window.scrollTo(0, 0)")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=args.full_page)
    finally:
        demo.close()
    print(f"answer: {exchange.answer}\nstatus: {exchange.status}\nsaved {args.out}")
    return 0 if exchange.status != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
