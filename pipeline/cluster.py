"""Batch work on a Ray cluster: connecting to it, and the sizes of the work it is given.

``ray = "auto"`` (a cluster started with ``ray start``, found through ``RAY_ADDRESS`` or this host's
session), ``"local"`` (a cluster of this machine, started for the run and stopped after it) or an
address (``HOST:PORT`` of the head node, or ``ray://HOST:10001`` for Ray Client). Ray is an optional
extra (``pip install 'kecpm[ray]'``); without it every cluster path raises :class:`RayUnavailable`.

Every node runs kecpm's own code, so kecpm (and its models) must be installed on each, and the
folders a run names (extractor, store, call cache) must be at the same path on every node (a shared
file system); the call cache itself is only ever opened on the driver's node (see
:mod:`.cluster_cache`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from ..errors import KecpmError

__all__ = ["RayUnavailable", "cluster_workers", "import_ray", "ray_session"]


class RayUnavailable(KecpmError):
    """Ray is not installed (or too old): the cluster paths need the ``kecpm[ray]`` extra."""


def import_ray() -> Any:
    """The ``ray`` module, or :class:`RayUnavailable` naming the extra to install."""
    try:
        import ray
        import ray.data  # the extractor's batch path, part of the extra
    except ImportError as exc:
        raise RayUnavailable(
            f"running on a Ray cluster needs Ray: pip install 'kecpm[ray]' (importing it failed: {exc})"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Connected to the cluster at ``address`` (see the module docs) for the block; the ``ray`` module.

    A process already connected (a notebook, a test's cluster) keeps its connection; a connection made
    here is closed on exit, and a ``local`` cluster started here is stopped with it.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address != "local":
        options["address"] = address
    else:
        options["include_dashboard"] = False
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise KecpmError(f"cannot reach the Ray cluster {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_workers(ray: Any, cpus_per_worker: float, wanted: int | None) -> int:
    """Workers to start: ``wanted``, else as many as the cluster's CPUs hold at ``cpus_per_worker`` each."""
    if wanted is not None:
        return wanted
    cpus = float(ray.cluster_resources().get("CPU", 0))
    return max(1, math.floor(cpus / cpus_per_worker))
