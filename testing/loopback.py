"""A loopback OpenAI-compatible chat-completions server for tests and benchmarks.

A real HTTP/1.1 server (asyncio streams, keep-alive) on 127.0.0.1 that answers
``POST /v1/chat/completions`` with schema-valid canned answers: when the request forces a function
(tool calling, as ``with_structured_output(method="function_calling")`` sends), the arguments are an
example built from that function's JSON schema; with ``response_format`` ``json_schema`` the content
is; otherwise a short text. It waits ``latency`` seconds per request, injects faults, and counts
everything, including *repeated* requests (a body it already answered successfully: paid work done
twice).

Faults, by name: ``429`` (with Retry-After), ``500``, ``503``, ``reset`` (the connection is dropped),
``timeout`` (the answer comes after ``hang`` seconds), ``malformed`` (a body that is not JSON),
``truncated`` (function arguments cut short, finish_reason length), ``empty`` (no content, no call),
``refusal``. They come from ``script`` (one per request, in order; ``None`` for a clean answer) and,
once it is used up, at random with the ``faults`` rates.

It runs in a thread of the calling process (tests) or in its own process (benchmarks, so the server
does not compete with the client for the GIL); both are controlled the same way, over HTTP::

    with LoopbackServer(latency=0.05, faults={"429": 0.2}) as server:
        config = LLMConfig(base_url=server.base_url, model="loopback")  # from kecpm.llm
        ...
        server.stats()["completions"]

``python -m kecpm.testing.loopback --latency 1`` serves until killed (it prints its port first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FAULTS", "LoopbackServer", "example_from_schema"]

FAULTS = ("429", "500", "503", "reset", "timeout", "malformed", "truncated", "empty", "refusal")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}
_NAME = re.compile(r"\b[A-Z][\w'-]+(?: [A-Z][\w'-]+)*")


def example_from_schema(
    schema: Mapping[str, Any],
    *,
    defs: Mapping[str, Any] | None = None,
    subject: str = "The entity",
    items: int = 2,
    accept: bool = False,
    name: str = "",
    index: int = 0,
) -> Any:
    """A value valid under ``schema`` (the subset pydantic emits: objects, arrays, enums, refs, bounds).

    Strings are sentences about ``subject``; a boolean named ``accept`` is ``accept``; an array of
    objects with an ``index`` field gets ``items`` elements numbered 1..items.
    """
    defs = defs if defs is not None else schema.get("$defs", {})
    kwargs = {"defs": defs, "subject": subject, "items": items, "accept": accept}
    if "$ref" in schema:
        return example_from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], name=name, index=index, **kwargs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example_from_schema(options[0], name=name, index=index, **kwargs)
    if "allOf" in schema:
        return example_from_schema(schema["allOf"][0], name=name, index=index, **kwargs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][index % len(schema["enum"])]
    kind = schema.get("type", "object")
    if kind == "object":
        return {
            key: example_from_schema(value, name=key, index=index, **kwargs)
            for key, value in schema.get("properties", {}).items()
        }
    if kind == "array":
        item_schema = schema.get("items", {})
        resolved = defs.get(item_schema.get("$ref", "").rsplit("/", 1)[-1], item_schema)
        count = items if "index" in resolved.get("properties", {}) else 2
        count = max(schema.get("minItems", 0), min(count, schema.get("maxItems", count)))
        return [example_from_schema(item_schema, name=name, index=i, **kwargs) for i in range(count)]
    if kind == "string":
        text = f"{subject} is mentioned in the post ({name or 'fact'} {index + 1})."
        text = text[: schema.get("maxLength", len(text))]
        return text.ljust(schema.get("minLength", 0), ".")
    if kind == "integer":
        return index + 1 if name == "index" else max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return accept if name == "accept" else True
    return None


class _State:
    """The serving side: settings, fault plan, counters."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.rng = random.Random(0)
        self.seen: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.tools: Counter[str] = Counter()
        self.in_flight = 0
        self.last_request: dict[str, Any] = {}
        self.script: deque[str | None] = deque()
        self.latency = 0.0
        self.rates: dict[str, float] = {}
        self.retry_after = 1.0
        self.hang = 30.0
        self.accept = False
        self.api_key: str | None = None
        self.configure(settings)

    def configure(self, settings: Mapping[str, Any]) -> None:
        if "seed" in settings:
            self.rng = random.Random(settings["seed"])
        if "script" in settings:
            self.script = deque(settings["script"])
        if "faults" in settings:
            unknown = set(settings["faults"]) - set(FAULTS)
            if unknown:
                raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
            self.rates = {k: float(v) for k, v in settings["faults"].items()}
        for key in ("latency", "retry_after", "hang", "accept", "api_key"):
            if key in settings:
                setattr(self, key, settings[key])

    def reset(self) -> None:
        self.seen.clear()
        self.counts.clear()
        self.faults.clear()
        self.tools.clear()
        self.counts["max_in_flight"] = self.in_flight

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.counts["requests"],
            "completions": self.counts["completions"],
            "repeated": self.counts["repeated"],
            "unauthorized": self.counts["unauthorized"],
            "faults": dict(self.faults),
            "tools": dict(self.tools),
            "distinct": len(self.seen),
            "max_in_flight": self.counts["max_in_flight"],
            "last_request": self.last_request,
        }

    def next_fault(self) -> str | None:
        if self.script:
            return self.script.popleft()
        draw = self.rng.random()
        for fault, rate in self.rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return None


def _subject(body: Mapping[str, Any]) -> tuple[str, int]:
    """A name from the post's text and the number of numbered statements, from the last user message."""
    text = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = content or ""
            break
    post = next((line[5:] for line in text.splitlines() if line.startswith("Text:")), text)
    names = [n for n in _NAME.findall(post) if n not in {"RT", "Text"}]
    statements = len(re.findall(r"^\d+\. ", text, flags=re.MULTILINE))
    return (names[0] if names else "The entity"), max(statements, 1)


def _answer(state: _State, body: Mapping[str, Any], fault: str | None) -> dict[str, Any]:
    subject, statements = _subject(body)
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    tool = next(
        (t["function"] for t in tools if t["function"]["name"] == forced), tools[0]["function"] if tools else None
    )
    response_format = body.get("response_format") or {}
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if fault == "empty":
        message["content"] = ""
    elif fault == "refusal":
        message["refusal"] = "I'm sorry, I can't help with that."
    elif tool is not None:
        args = json.dumps(
            example_from_schema(tool.get("parameters", {}), subject=subject, items=statements, accept=state.accept)
        )
        if fault == "truncated":
            args, finish = args[: len(args) // 2], "length"
        else:
            finish = "tool_calls"
        if fault is None:
            state.tools[tool["name"]] += 1
        message["tool_calls"] = [
            {
                "id": f"call_{state.counts['requests']}",
                "type": "function",
                "function": {"name": tool["name"], "arguments": args},
            }
        ]
    elif response_format.get("type") == "json_schema":
        schema = response_format["json_schema"].get("schema", {})
        content = json.dumps(example_from_schema(schema, subject=subject, items=statements, accept=state.accept))
        if fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        message["content"] = content
    else:
        message["content"] = f"{subject} is mentioned in the post."
        if fault == "truncated":
            message["content"], finish = message["content"][:8], "length"
    produced = len(json.dumps(message))
    prompt = len(json.dumps(body.get("messages", [])))
    return {
        "id": f"chatcmpl-loopback-{state.counts['requests']}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt // 4,
            "completion_tokens": produced // 4,
            "total_tokens": (prompt + produced) // 4,
        },
    }


def _error(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": str(status)}}).encode()


async def _respond(
    state: _State, method: str, path: str, headers: Mapping[str, str], payload: bytes
) -> tuple[int, dict[str, str], bytes | None]:
    """``(status, headers, body)``; a body of None means drop the connection."""
    if path.startswith("/_loopback/"):
        action = path.removeprefix("/_loopback/")
        if action == "config" and method == "POST":
            state.configure(json.loads(payload or b"{}"))
        elif action == "reset" and method == "POST":
            state.reset()
        elif action != "stats":
            return 404, {}, _error(404, f"no control {action}", "not_found")
        return 200, {}, json.dumps(state.stats()).encode()
    if path.rstrip("/").endswith("/models") and method == "GET":
        return 200, {}, json.dumps({"object": "list", "data": [{"id": "loopback", "object": "model"}]}).encode()
    if not (path.rstrip("/").endswith("/chat/completions") and method == "POST"):
        return 404, {}, _error(404, f"no route {method} {path}", "not_found")
    state.counts["requests"] += 1
    if state.api_key is not None and headers.get("authorization") != f"Bearer {state.api_key}":
        state.counts["unauthorized"] += 1
        return 401, {}, _error(401, "Incorrect API key provided.", "invalid_request_error")
    try:
        body = json.loads(payload)
    except json.JSONDecodeError:
        return 400, {}, _error(400, "the request body is not JSON", "invalid_request_error")
    state.last_request = {k: v for k, v in body.items() if k != "messages"}
    fault = state.next_fault()
    if fault is not None:
        state.faults[fault] += 1
    if fault == "reset":
        return 0, {}, None
    state.in_flight += 1
    state.counts["max_in_flight"] = max(state.counts["max_in_flight"], state.in_flight)
    try:
        await asyncio.sleep(state.hang if fault == "timeout" else state.latency)
    finally:
        state.in_flight -= 1
    if fault == "429":
        return 429, {"retry-after": f"{state.retry_after:g}"}, _error(429, "Rate limit reached.", "rate_limit_error")
    if fault in ("500", "503"):
        return int(fault), {}, _error(int(fault), "The server had an error.", "server_error")
    if fault == "malformed":
        return 200, {}, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"role": "assist'
    answer = _answer(state, body, fault)
    if fault is None:
        state.counts["completions"] += 1
        digest = hashlib.sha256(payload).hexdigest()
        state.seen[digest] += 1
        if state.seen[digest] > 1:
            state.counts["repeated"] += 1
    return 200, {}, json.dumps(answer).encode()


async def _handle(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line.strip():
                break
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
            status, extra, body = await _respond(state, method, path.split("?", 1)[0], headers, payload)
            if body is None:
                writer.transport.abort()
                return
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "content-type: application/json"]
            head += [f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in extra.items())]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def _serve(state: _State, host: str, port: int, ready: Any, stop: asyncio.Event | None = None) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(state, r, w), host, port, backlog=1024)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()


class LoopbackServer:
    """The loopback server, in a thread (default) or in a child process (``process=True``).

    Settings (all changeable later with :meth:`configure`): ``latency`` seconds per request;
    ``faults`` rates per fault name; ``script`` faults for the next requests in order; ``retry_after``
    seconds sent with 429; ``hang`` seconds of a ``timeout`` fault; ``accept`` for critique answers;
    ``api_key`` to require (401 otherwise); ``seed`` of the fault draws.
    """

    def __init__(self, *, process: bool = False, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        self.host = host
        self.port = port
        self.process = process
        self.settings = {"latency": 0.0, **settings}
        _State(self.settings)  # fail early on bad settings
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._child: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> LoopbackServer:
        if self.process:
            command = [sys.executable, "-m", "kecpm.testing.loopback", "--host", self.host, "--port", str(self.port)]
            command += ["--settings", json.dumps(self.settings)]
            self._child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            line = self._child.stdout.readline() if self._child.stdout else ""
            if not line.startswith("LOOPBACK PORT "):
                self.stop()
                raise RuntimeError(f"the loopback server did not start: {line!r}")
            self.port = int(line.split()[-1])
            return self
        started = threading.Event()

        def ready(port: int) -> None:
            self.port = port
            started.set()

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                await _serve(_State(self.settings), self.host, self.port, ready, self._stop)

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="kecpm-loopback", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the loopback server did not start")
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._child.terminate()
            self._child.wait(timeout=10)
            self._child = None
        if self._thread is not None and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
            self._thread = None

    def _control(self, action: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        url = f"http://{self.host}:{self.port}/_loopback/{action}"
        with httpx.Client(timeout=10) as client:
            response = client.post(url, json=dict(settings or {})) if action != "stats" else client.get(url)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """Counters: requests, completions (clean answers), repeated, unauthorized, faults, tools (function
        answered, by name), distinct (request bodies answered), max_in_flight (requests held at once),
        last_request (the last chat request, without its messages)."""
        return self._control("stats")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings while serving (latency, faults, script, retry_after, hang, accept, api_key, seed)."""
        return self._control("config", settings)

    def reset(self) -> dict[str, Any]:
        """Zero the counters (and forget which bodies were answered)."""
        return self._control("reset")

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LoopbackServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def _parse_faults(text: str) -> dict[str, float]:
    pairs: Iterable[str] = (p for p in text.split(",") if p)
    return {name: float(rate) for name, _, rate in (p.partition("=") for p in pairs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the kecpm loopback OpenAI-compatible test server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=None, help="seconds per request")
    parser.add_argument("--faults", default="", help="rates, e.g. 429=0.1,500=0.05")
    parser.add_argument("--settings", default="{}", help="all settings as JSON")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    if args.latency is not None:
        settings["latency"] = args.latency
    if args.faults:
        settings["faults"] = _parse_faults(args.faults)

    def ready(port: int) -> None:
        print(f"LOOPBACK PORT {port}", flush=True)

    try:
        import uvloop  # a lighter loop when installed; the server works without it

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(_State(settings), args.host, args.port, ready))


if __name__ == "__main__":
    main()
