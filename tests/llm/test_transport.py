"""The lean transport (kecpm's chat model over its own keep-alive HTTP pool) against real servers: the
loopback OpenAI-compatible server, and raw asyncio servers for what the loopback never sends (chunked and
gzip bodies, a proxy, connections the server drops)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import SecretStr

from kecpm.agents import Knowledge, KnowledgeBuilder
from kecpm.llm import ChatClient, ChatCompletionsModel, HTTPPool, LLMCallError, LLMConfig, LLMHTTPError
from kecpm.llm.retry import _retry_after
from kecpm.records import Post
from kecpm.testing import LoopbackServer

KEY = "sk-transport-PLANTED-0123456789"
MESSAGES = [SystemMessage("You write facts."), HumanMessage("Text: Mira Holt sang in Port Avery.")]


def _model(server: LoopbackServer, **options) -> ChatCompletionsModel:
    return ChatCompletionsModel(
        model="loopback", base_url=server.base_url, timeout=options.pop("timeout", 5.0), **options
    )


async def test_tool_calls_usage_and_keep_alive(server: LoopbackServer) -> None:
    model = _model(server, max_tokens=50, temperature=0.1, seed=3)
    try:
        bound = model.bind_tools([Knowledge], tool_choice="Knowledge")
        for _ in range(20):
            answer = await bound.ainvoke(MESSAGES)
        (call,) = answer.tool_calls
        assert call["name"] == "Knowledge"
        Knowledge(**call["args"])
        assert answer.usage_metadata["input_tokens"] > 0 and answer.usage_metadata["output_tokens"] > 0
        assert answer.response_metadata["finish_reason"] == "tool_calls"
        sent = server.stats()["last_request"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "Knowledge"}}
        assert sent["tools"][0]["function"]["parameters"]["properties"]["statements"]
        assert (sent["max_completion_tokens"], sent["temperature"], sent["seed"]) == (50, 0.1, 3)
        assert model.pool.opened == 1  # twenty calls, one after another, over one connection
    finally:
        await model.aclose()


async def test_many_calls_in_flight_share_a_bounded_pool(server: LoopbackServer) -> None:
    server.configure(latency=0.1)
    model = _model(server, max_connections=8)
    try:
        answers = await asyncio.gather(*(model.ainvoke(MESSAGES) for _ in range(40)))
        assert all("mentioned" in a.text for a in answers)
        assert server.stats()["max_in_flight"] == 8 and model.pool.opened == 8
    finally:
        await model.aclose()


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
async def test_structured_output_by_function_call_and_json_schema(server: LoopbackServer, method: str) -> None:
    model = _model(server)
    try:
        answer = await model.with_structured_output(Knowledge, method=method, include_raw=True).ainvoke(MESSAGES)
        assert answer["parsing_error"] is None and isinstance(answer["parsed"], Knowledge)
        assert "Mira Holt" in answer["parsed"].statements[0]
        sent = server.stats()["last_request"]
        assert ("tools" in sent) == (method == "function_calling")
        assert ("response_format" in sent) == (method == "json_schema")
        plain = await model.with_structured_output(Knowledge, method=method).ainvoke(MESSAGES)
        assert isinstance(plain, Knowledge)
    finally:
        await model.aclose()


async def test_bad_answers_arrive_as_langchain_sees_them(server: LoopbackServer) -> None:
    model = _model(server)
    bound = model.bind_tools([Knowledge], tool_choice="Knowledge")
    try:
        server.configure(script=["truncated", "refusal", "empty"])
        truncated = await bound.ainvoke(MESSAGES)
        assert truncated.tool_calls == [] and truncated.invalid_tool_calls[0]["name"] == "Knowledge"
        refused = await bound.ainvoke(MESSAGES)
        assert refused.additional_kwargs["refusal"].startswith("I'm sorry")
        empty = await bound.ainvoke(MESSAGES)
        assert empty.content == "" and not empty.tool_calls
    finally:
        await model.aclose()


async def test_http_faults_become_errors_with_their_kind(server: LoopbackServer) -> None:
    model = _model(server, timeout=0.4)
    try:
        server.configure(script=["429"], retry_after=0.7)
        with pytest.raises(LLMHTTPError) as caught:
            await model.ainvoke(MESSAGES)
        assert (caught.value.kind, caught.value.retryable, caught.value.status_code) == ("rate_limit", True, 429)
        assert _retry_after(caught.value) == 0.7
        for fault, kind in (("503", "server"), ("reset", "connection"), ("malformed", "malformed_response")):
            server.configure(script=[fault])
            with pytest.raises(LLMCallError) as caught:
                await model.ainvoke(MESSAGES)
            assert caught.value.kind == kind and caught.value.retryable, fault
        server.configure(script=["timeout"], hang=1.0)
        started = time.perf_counter()
        with pytest.raises(LLMCallError) as caught:
            await model.ainvoke(MESSAGES)
        assert caught.value.kind == "timeout" and time.perf_counter() - started < 0.9
        answer = await model.ainvoke(MESSAGES)  # the pool recovers from all of it
        assert answer.text
    finally:
        await model.aclose()


async def test_the_key_is_sent_but_never_shown(server: LoopbackServer) -> None:
    server.configure(api_key=KEY)
    try:
        model = _model(server, api_key=SecretStr(KEY))
        assert (await model.ainvoke(MESSAGES)).text
        assert server.stats()["unauthorized"] == 0
        for text in (repr(model), str(vars(model)), repr(model.pool), model.model_dump_json()):
            assert KEY not in text
        await model.aclose()
        wrong = _model(server, api_key=SecretStr("sk-wrong-key-0000000000"))
        with pytest.raises(LLMHTTPError) as caught:
            await wrong.ainvoke(MESSAGES)
        assert caught.value.kind == "auth" and not caught.value.retryable
        assert "Incorrect API key" in str(caught.value) and "sk-wrong" not in str(caught.value)
        await wrong.aclose()
    finally:
        server.configure(api_key=None)


def test_sync_invoke_outside_and_inside_a_running_loop(server: LoopbackServer) -> None:
    model = _model(server)
    assert "mentioned" in model.invoke(MESSAGES).text

    async def inside() -> str:
        return model.invoke(MESSAGES).text

    assert "mentioned" in asyncio.run(inside())
    assert len(model._pools) == 0  # each private loop's pool closed with its call


async def test_one_model_serves_several_event_loops(server: LoopbackServer) -> None:
    model = _model(server)
    assert (await model.ainvoke(MESSAGES)).text
    # The same model from another loop (a sync wrapper's private loop, in a thread) gets a pool of its own.

    async def elsewhere() -> str:
        try:
            return (await model.ainvoke(MESSAGES)).text
        finally:
            await model.aclose()  # that loop's pool only

    assert await asyncio.to_thread(asyncio.run, elsewhere())
    assert len(model._pools) == 1
    assert (await model.ainvoke(MESSAGES)).text and model.pool.opened == 1  # this loop's pool, reused
    await model.aclose()
    assert len(model._pools) == 0


async def test_both_transports_build_the_same_knowledge_under_the_same_keys(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    results = {}
    for transport in ("lean", "openai"):
        server.reset()
        config = LLMConfig(base_url=server.base_url, model="loopback", transport=transport)
        async with KnowledgeBuilder(config, cache=tmp_path / f"{transport}.sqlite", progress=False) as builder:
            assert type(builder.chain.model).__name__ == (
                "ChatCompletionsModel" if transport == "lean" else "ChatOpenAI"
            )
            report = await builder.abuild(posts[:6])
        assert report.succeeded == 6 and server.stats()["completions"] == 18
        results[transport] = sorted((r.post_id, r.knowledge, [s.key for s in r.steps]) for r in report.results)
    assert results["lean"] == results["openai"]


async def test_the_client_closes_what_it_opened(server: LoopbackServer) -> None:
    async with ChatClient(LLMConfig(base_url=server.base_url, model="loopback")) as client:
        await client.model.ainvoke(MESSAGES)
        pool = client.model.pool
    assert pool._closed and not pool._idle


# Raw servers, for the HTTP that the loopback server never speaks
@asynccontextmanager
async def _raw_server(answer: Callable[[bytes], bytes], *, close_after: bool = False) -> AsyncIterator[dict]:
    seen: dict = {"requests": [], "connections": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                seen["requests"].append(head.split(b"\r\n")[0].decode())
                writer.write(answer(body))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen["port"] = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


def _completion(text: str) -> bytes:
    return json.dumps(
        {"id": "x", "model": "raw", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    ).encode()


def _chunked_gzip(body: bytes) -> bytes:
    packed = gzip.compress(_completion("chunked and gzipped"))
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(packed[i : i + 7]), packed[i : i + 7]) for i in range(0, len(packed), 7))
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    return head + b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


async def test_chunked_gzip_answers_are_read() -> None:
    async with _raw_server(_chunked_gzip) as seen:
        model = ChatCompletionsModel(model="raw", base_url=f"http://127.0.0.1:{seen['port']}/v1")
        try:
            assert (await model.ainvoke(MESSAGES)).text == "chunked and gzipped"
            assert (await model.ainvoke(MESSAGES)).text == "chunked and gzipped"
            assert seen["connections"] == 1 and seen["requests"][0] == "POST /v1/chat/completions HTTP/1.1"
        finally:
            await model.aclose()


async def test_a_connection_the_server_dropped_while_idle_is_not_reused() -> None:
    def plain(body: bytes) -> bytes:  # no "connection: close": the client learns of the close from the socket
        payload = _completion("fresh")
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)

    async with _raw_server(plain, close_after=True) as seen:
        pool = HTTPPool(f"http://127.0.0.1:{seen['port']}/v1")
        try:
            for _ in range(3):
                status, _, body = await pool.post("/chat/completions", b"{}")
                assert status == 200 and json.loads(body)["choices"]
                await asyncio.sleep(0.05)
            assert seen["connections"] == 3 and pool.opened == 3
        finally:
            await pool.aclose()


async def test_the_environment_proxy_is_used_for_plain_http(monkeypatch) -> None:
    def relay(body: bytes) -> bytes:
        payload = _completion("through the proxy")
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)

    async with _raw_server(relay) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{proxy['port']}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        model = ChatCompletionsModel(model="raw", base_url="http://llm.example:8080/v1")
        try:
            assert (await model.ainvoke(MESSAGES)).text == "through the proxy"
        finally:
            await model.aclose()
    assert proxy["requests"] == ["POST http://llm.example:8080/v1/chat/completions HTTP/1.1"]


async def test_observed_calls_keep_langchains_run_machinery(server: LoopbackServer, monkeypatch) -> None:
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.language_models import BaseChatModel
    from langchain_core.rate_limiters import InMemoryRateLimiter

    class Recorder(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.events: list[str] = []

        async def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
            self.events.append("start")

        async def on_llm_end(self, response, **kwargs) -> None:
            self.events.append(f"end:{response.generations[0][0].message.usage_metadata['output_tokens'] > 0}")

    through_base = []
    original = BaseChatModel.agenerate

    async def counting(self, *args, **kwargs):
        through_base.append(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(BaseChatModel, "agenerate", counting)
    model = _model(server)
    try:
        await model.ainvoke(MESSAGES)  # nobody observes: straight to the endpoint
        assert through_base == []
        recorder = Recorder()
        answer = await model.bind_tools([Knowledge], tool_choice="Knowledge").ainvoke(
            MESSAGES, {"callbacks": [recorder]}
        )
        assert answer.tool_calls and recorder.events == ["start", "end:True"] and len(through_base) == 1
        limited = _model(server, rate_limiter=InMemoryRateLimiter(requests_per_second=100))
        await limited.ainvoke(MESSAGES)  # a rate limiter takes part: the base class runs it
        assert len(through_base) == 2
        await limited.aclose()
    finally:
        await model.aclose()
