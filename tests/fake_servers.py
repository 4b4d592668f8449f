"""A fake OpenAI-compatible (vLLM) server for checklist judges: FastAPI + uvicorn in a thread, canned answers."""

import base64
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fake_checklist_server() -> Iterator[str]:
    """Yields the API base URL of a server that passes every test point of an image whose mean pixel value is over
    100 (of 255) and fails those of a darker one; for the caption "garbage" it answers without verdicts."""
    import uvicorn
    from fastapi import FastAPI, Request
    from PIL import Image

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        content = body["messages"][-1]["content"]
        text = " ".join(c["text"] for c in content if c["type"] == "text")
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        count = int(re.search(r"each of these (\d+) test points", text).group(1))
        verdict = "1" if np.asarray(image).mean() > 100 else "0"
        answer = (
            "I cannot tell." if 'caption: "garbage"' in text else f"<score>[{', '.join([verdict] * count)}]</score>"
        )
        return {"choices": [{"message": {"content": answer}, "finish_reason": "stop"}]}

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
