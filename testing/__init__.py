"""A test kit for code built on kecpm: the loopback OpenAI-compatible server (real HTTP on 127.0.0.1, canned
schema-valid answers, injected faults, counters) and fakes (a scripted chat model, tool-call answers).

>>> from kecpm.testing import LoopbackServer
>>> with LoopbackServer(latency=0.05) as server:  # doctest: +SKIP
...     config = LLMConfig(base_url=server.base_url, model="loopback")

``python -m kecpm.testing.loopback --port 8765`` serves until killed.
"""

from ..lazy import lazy_attributes

# Imported on first use: the fakes subclass LangChain's fake chat model, and `python -m
# kecpm.testing.loopback` must find its module not yet imported by this package.
_LAZY = {
    "FAULTS": ".loopback",
    "LoopbackServer": ".loopback",
    "example_from_schema": ".loopback",
    "ScriptedChatModel": ".fakes",
    "tool_answer": ".fakes",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["FAULTS", "LoopbackServer", "ScriptedChatModel", "example_from_schema", "tool_answer"]
