"""One LLM call cache for a whole Ray cluster, and the cluster-wide limits on LLM calls.

SQLite is safe between processes of one host, not between hosts (a shared file system's locks cannot
be trusted with it), so the cache file is opened by one Ray actor on the driver's node,
:class:`CallCacheActor`, and every worker reaches it through :class:`SharedCache`, which has the
public methods of :class:`~kecpm.agents.KnowledgeCache` (and their ``a``-prefixed async twins) and can
be handed to a knowledge builder in place of one. Why an actor rather than a server database: it keeps
kecpm's one cache format (a build on a laptop and one on a cluster share a file, and the export, the
``--only-failed`` rerun and the experiment runner read it unchanged), and it needs no service to run;
its bound is one process serialising the cache's writes (measured in ``benchmarks/cluster_bench.py``).

The actor also holds the limits for the cluster as a whole: at most ``concurrency`` LLM calls in flight
and ``requests_per_second`` calls started per second. Every paid call starts with a claim of its lease,
so the actor answers ``"busy"`` (wait and ask again: the chain's own protocol) while the limits are
reached. A call's slot ends with its answer (``put_call``) or its failure (``release``), or, for a
worker lost with its node, when its lease runs out (``lease_s`` without renewal; the holder renews every
``lease_s / 3``). Then another worker may make that call: a lost node costs only its calls in flight.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..agents import KnowledgeCache

__all__ = ["CallCacheActor", "SharedCache", "start_cache_actor"]

# KnowledgeCache's public methods that SharedCache forwards to the actor.
_FORWARDED = (
    "get_call",
    "put_call",
    "renew",
    "release",
    "claims",
    "count_calls",
    "put_result",
    "put_failure",
    "drop_failures",
    "result",
    "results",
    "failures",
    "runs",
    "export_kecpm",
    "call_stage",
    "history",
)


class CallCacheActor:
    """The cluster's call cache and limiter (a Ray actor; one process serialises every request)."""

    def __init__(
        self,
        path: str,
        *,
        lease_s: float,
        concurrency: int | None = None,
        requests_per_second: float | None = None,
    ) -> None:
        self.cache = KnowledgeCache(path, lease_s=lease_s)
        self.lease_s = lease_s
        self.concurrency = concurrency
        self.rate = requests_per_second
        self._tokens = 1.0
        self._refilled = time.monotonic()
        self._slots: dict[str, float] = {}  # call key -> when its slot lapses without renewal
        self.stats = {"claims": 0, "busy_limit": 0, "made": 0, "peak_in_flight": 0}

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.cache.path), "lease_s": self.lease_s}

    def claim(self, key: str) -> str:
        """As :meth:`KnowledgeCache.claim`, and ``"busy"`` too while the cluster's limits are reached."""
        self.stats["claims"] += 1
        now = time.monotonic()
        self._slots = {k: until for k, until in self._slots.items() if until > now}
        if (self.concurrency is not None and len(self._slots) >= self.concurrency) or not self._has_token(now):
            if self.cache.get_call(key) is not None:
                return "done"
            self.stats["busy_limit"] += 1
            return "busy"
        state = self.cache.claim(key)
        if state == "mine":
            self._slots[key] = now + self.lease_s
            self._tokens -= 1
            self.stats["made"] += 1
            self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], len(self._slots))
        return state

    def _has_token(self, now: float) -> bool:
        if self.rate is None:
            return True
        # A bucket of one second's calls: bursts no larger than the rate itself.
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        return self._tokens >= 1.0

    def lookup(self, key: str) -> Any:
        """As :meth:`KnowledgeCache.alookup`: the stored call, else ``"mine"`` or ``"busy"`` (limits included)."""
        found = self.cache.get_call(key)
        if found is not None:
            return found
        state = self.claim(key)
        return self.cache.get_call(key) if state == "done" else state

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Any other public method of the cache; the ones that end or extend a call also move its slot."""
        if name not in _FORWARDED:
            raise AttributeError(f"the shared cache has no method {name!r}")
        result = getattr(self.cache, name)(*args, **kwargs)
        if inspect.isgenerator(result):  # results(): sent whole, a generator cannot travel
            result = list(result)
        key = args[0] if args else kwargs.get("key")
        if name in ("put_call", "release"):
            self._slots.pop(key, None)
        elif name == "renew" and key in self._slots:
            self._slots[key] = time.monotonic() + self.lease_s
        return result

    def statistics(self) -> dict[str, int]:
        return {**self.stats, "in_flight": len(self._slots)}

    def close(self) -> None:
        self.cache.close()


class SharedCache:
    """A worker's handle on the cluster's call cache: :class:`~kecpm.agents.KnowledgeCache`'s public
    methods (sync, and async as ``aget_call``, ``aclaim``, ...), each a call to the actor."""

    def __init__(self, actor: Any) -> None:
        import ray

        self._ray = ray
        self._actor = actor
        settings = ray.get(actor.settings.remote())
        self.path = Path(settings["path"])
        self.lease_s: float = settings["lease_s"]

    def claim(self, key: str) -> str:
        return self._ray.get(self._actor.claim.remote(key))

    async def aclaim(self, key: str) -> str:
        return await self._actor.claim.remote(key)

    async def alookup(self, key: str) -> Any:
        return await self._actor.lookup.remote(key)

    def put_call_soon(self, key: str, **fields: Any) -> Any:
        """Sent to the actor at once; :meth:`flush` waits for it (the actor runs a caller's requests in order)."""
        return self._pending(self._actor.call.remote("put_call", key, **fields))

    def release_soon(self, key: str) -> Any:
        return self._pending(self._actor.call.remote("release", key))

    def _pending(self, ref: Any) -> Any:
        self.__dict__.setdefault("_sent", []).append(ref)
        return ref.future()

    def flush(self) -> None:
        """Wait until every request sent with ``*_soon`` has landed."""
        sent, self.__dict__["_sent"] = self.__dict__.get("_sent", []), []
        self._ray.get(sent)

    def close(self) -> None:
        """Nothing to close here: the actor owns the file (requests sent are waited for)."""
        self.flush()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.flush)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        actor = self.__dict__.get("_actor")
        if name in _FORWARDED:
            return lambda *args, **kwargs: self._ray.get(actor.call.remote(name, *args, **kwargs))
        if name.startswith("a") and name[1:] in _FORWARDED:

            async def forward(*args: Any, **kwargs: Any) -> Any:
                return await actor.call.remote(name[1:], *args, **kwargs)

            return forward
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to a task as the actor's handle: each process asks the actor for its settings once.
        return (SharedCache, (self._actor,))


def start_cache_actor(
    path: str | Path,
    *,
    lease_s: float,
    concurrency: int | None,
    requests_per_second: float | None,
) -> Any:
    """The cache actor on this (the driver's) node, where the file is; restarted there if it dies."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(CallCacheActor).options(
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    )
    actor = remote.remote(
        str(Path(path).resolve()), lease_s=lease_s, concurrency=concurrency, requests_per_second=requests_per_second
    )
    ray.get(actor.settings.remote())  # started and the file opened: errors surface here, not in a worker
    return actor
