"""Client CPU per structured call: kecpm's own function-calling wrapper against LangChain's
``with_structured_output(method="function_calling", include_raw=True)``, over the same fake chat model
(no HTTP, so only the wrapper's cost differs), interleaved in one run.

    python benchmarks/structured_output_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage

from kecpm.agents.knowledge import _structured
from kecpm.agents.schemas import Knowledge


class _Model(GenericFakeChatModel):
    def bind_tools(self, tools, **kwargs):  # type: ignore[no-untyped-def]
        return self


def _answers(n: int):  # type: ignore[no-untyped-def]
    call = {"name": "Knowledge", "args": {"statements": ["Mira Holt is a singer."]}, "id": "c", "type": "tool_call"}
    return iter([AIMessage(content="", tool_calls=[call]) for _ in range(n)])


async def _cpu_per_call(runnable, calls: int) -> float:  # type: ignore[no-untyped-def]
    messages = [HumanMessage("Text: Mira Holt sings")]
    started = time.process_time()
    for _ in range(calls):
        answer = await runnable.ainvoke(messages)
        assert answer["parsed"] is not None
    return (time.process_time() - started) / calls * 1000


async def main(calls: int, rounds: int) -> None:
    own, library = [], []
    for _ in range(rounds):
        own.append(
            await _cpu_per_call(_structured(_Model(messages=_answers(calls)), Knowledge, "function_calling"), calls)
        )
        model = _Model(messages=_answers(calls))
        wrapped = model.with_structured_output(Knowledge, method="function_calling", include_raw=True)
        library.append(await _cpu_per_call(wrapped, calls))
    best_own, best_library = min(own), min(library)
    print(f"kecpm _structured:              {best_own:.3f} ms CPU per call (best of {rounds} x {calls})")
    print(f"with_structured_output(include_raw): {best_library:.3f} ms CPU per call")
    print(f"ratio library / own: {best_library / best_own:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
