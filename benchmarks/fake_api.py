"""What every local stand-in for an OpenAI-compatible chat endpoint shares (the tests' scripted server, perf.py's
slow one): reading a request, a completion's JSON, sending an answer. They listen on 127.0.0.1 only."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

__all__ = ["ChatHandler", "completion"]


def completion(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """A chat completion as the API returns it, with its usage."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ChatHandler(BaseHTTPRequestHandler):
    """A request handler with the request's JSON body, a JSON answer and no log lines."""

    def body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
