"""A stage's units over a pool of Ray workers; the driver alone commits (DESIGN.md §3.12).

Each worker is a Ray actor holding one copy of the stage's :class:`~prmfactory.work.StageWork`
— for mcts and judge one engine, opened once in the actor's event loop — and works on *whole
questions*, so every call of a question hits that engine's prefix cache (verl routes all turns
of a request to one server for the same reason). Units are pulled as workers free up, a few in
flight per worker to keep its batch full: a question's cost varies tenfold (pre-filtered vs the
full budget), so a static split would leave workers idle (GenPRM's ``ActorPool.map_unordered``
does the same over questions; OpenRLHF keeps one actor per engine).

Ray runs a task at least once, so exactly-once comes from the ledger: workers return rows, and
the driver's :class:`~prmfactory.work.UnitCommitter` commits them, dropping rows of a question
already committed. A lost worker (killed, out of memory, its node gone, its engine dead) is
replaced and its units are retried with one more attempt counted — each worker holds at most one
retried unit, so a question that kills its worker takes no other retried question down with it;
a unit that has lost ``max_attempts`` workers is given up on (mcts records its questions
``failed`` with the reason).
More than ``max_attempts`` workers lost in a row with nothing finished anywhere in between mean the
failure is not the questions' (a model that cannot load, a device that is not there): the stage
stops.

Ray is imported only here, and only when a stage is given ``--ray-address``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from prmfactory.engines.base import EngineFailure
from prmfactory.errors import PrmfactoryError, UsageError
from prmfactory.work import StageWork, Unit, UnitCommitter, WorkSummary, merge_counts, merge_engine_metrics

if TYPE_CHECKING:
    from prmfactory.config import ClusterConfig

LOG = logging.getLogger("prmfactory")
POLL_SECONDS = 1.0
WAITING_WARNING_SECONDS = 60.0
CLOSE_TIMEOUT_SECONDS = 120.0


class WorkerBroken(PrmfactoryError):
    """A worker can do no more work: its engine died or never started. The driver replaces it."""


class PoolWorker:
    """The actor: one opened :class:`StageWork`, many units at once on its event loop.

    ``ready`` opens the work (the engine starts here, so a worker takes units only once it can do
    them); a dead engine makes every later call fail at once instead of looping on it.
    """

    def __init__(self, work: StageWork):
        self.work = work
        self._opened = False
        self._broken: str | None = None
        self._lock = asyncio.Lock()

    async def ready(self) -> dict[str, Any]:
        async with self._lock:
            if not self._opened and self._broken is None:
                try:
                    await self.work.open()
                    self._opened = True
                except Exception as exc:
                    self._broken = f"could not start: {_first_line(exc)}"
        if self._broken is not None:
            raise WorkerBroken(self._broken)
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()[:12],
                "cpu_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")}

    async def process(self, payload: Any):
        if self._broken is not None:
            raise WorkerBroken(self._broken)
        try:
            return await self.work.process(payload)
        except EngineFailure as exc:
            self._broken = _first_line(exc)
            raise WorkerBroken(self._broken) from exc

    async def close(self) -> WorkSummary:
        if not self._opened:
            return WorkSummary()
        self._opened = False
        return await self.work.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no reason given'}"[:500]


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse, within seconds and before the run is touched, a cluster address nothing answers at.

    Ray itself retries an unreachable head for minutes; ``local`` and ``auto`` need no check here
    (``auto`` without a running cluster fails at once in ``ray.init``).
    """
    if address in ("local", "auto"):
        return
    import socket
    from urllib.parse import urlsplit

    target = urlsplit(address if "://" in address else f"ray://{address}")
    if target.hostname is None or target.port is None:
        raise UsageError(f"--ray-address {address}: expected local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((target.hostname, target.port), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc})") from exc


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise UsageError("--ray-address needs Ray: pip install 'prmfactory[ray]'") from exc
    return ray


@dataclass
class _Slot:
    """One worker position: its actor, whether it is ready, and what it has finished since it started."""

    index: int
    actor: Any
    ready: bool = False
    finished: int = 0
    load: int = 0
    holds_retry: bool = False
    started: float = field(default_factory=time.monotonic)


class RayPool:
    """Workers for one stage's work on a Ray cluster (joined, or started for ``ray_address: local``).

    Use as a context manager; :meth:`run` does the units and leaves the merged counters in
    ``counts`` and ``engine_metrics``; ``description`` is what run.yaml records of the cluster.
    """

    def __init__(self, cluster: "ClusterConfig", work: StageWork):
        self.cluster, self.work = cluster, work
        self.counts: dict[str, int] = {}
        self.engine_metrics: dict[str, Any] = {}
        self.description: dict[str, Any] = {}
        self._started_ray = False
        self._slots: dict[int, _Slot] = {}

    # ----- cluster ---------------------------------------------------------------------------
    def __enter__(self) -> "RayPool":
        ray = _ray()
        address = self.cluster.ray_address
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, configure_logging=False)  # "local": a new one
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UsageError(f"--ray-address {address}: cannot connect to a Ray cluster: {_first_line(exc)}") from exc
            self._started_ray = True
        resources = ray.cluster_resources()
        self.gpus_per_worker = self._gpus_per_worker(resources)
        per = self.gpus_per_worker if self.gpus_per_worker else self.cluster.cpus_per_worker
        available = resources.get("GPU" if self.gpus_per_worker else "CPU", 0)
        self.workers = self.cluster.workers or max(1, int(available // per))
        if self.workers * per > available:
            LOG.warning("%d workers of %s %s each ask for more than the cluster's %s; some wait for resources",
                        self.workers, per, "GPUs" if self.gpus_per_worker else "CPUs", available)
        self.description = {
            "ray_address": address, "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "resources": {k: v for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory")},
            "workers": self.workers, "gpus_per_worker": self.gpus_per_worker,
            "cpus_per_worker": self.cluster.cpus_per_worker, "max_attempts": self.cluster.max_attempts}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        ray = _ray()
        for slot in self._slots.values():
            ray.kill(slot.actor, no_restart=True)
        self._slots.clear()
        if self._started_ray:
            ray.shutdown()

    def _gpus_per_worker(self, resources: dict[str, float]) -> float:
        if self.cluster.gpus_per_worker is not None:
            return self.cluster.gpus_per_worker
        engine = self.work.engine
        if engine is not None and engine.backend == "vllm" and resources.get("GPU", 0) > 0:
            return float(engine.tensor_parallel_size)
        return 0.0

    def _env(self, index: int) -> dict[str, str]:
        """Environment of worker ``index``: the driver's PRMFACTORY_* settings, and on this machine's CPUs
        its own cores for vLLM, so two CPU engines do not share core 0 (``VLLM_CPU_OMP_THREADS_BIND``)."""
        env = {k: v for k, v in os.environ.items() if k.startswith("PRMFACTORY_")}
        engine = self.work.engine
        if (self.cluster.ray_address == "local" and not self.gpus_per_worker and engine is not None
                and engine.backend == "vllm"):
            cores = max(1, int(self.cluster.cpus_per_worker))
            first = (index * cores) % max(os.cpu_count() or 1, 1)
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(first) if cores == 1 else f"{first}-{first + cores - 1}"
        return env

    def _start(self, index: int) -> _Slot:
        ray = _ray()
        actor_class = ray.remote(PoolWorker).options(
            num_cpus=self.cluster.cpus_per_worker, num_gpus=self.gpus_per_worker,
            max_concurrency=self.work.units_in_flight + 2, max_restarts=0, max_task_retries=0,
            scheduling_strategy="SPREAD", runtime_env={"env_vars": self._env(index)})
        slot = _Slot(index, actor_class.remote(self.work))
        self._slots[index] = slot
        return slot

    # ----- the driver's loop -------------------------------------------------------------------
    def run(self, units: Sequence[Unit], committer: UnitCommitter) -> None:
        """Do every unit; returns when each is committed or given up on."""
        ray = _ray()
        from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

        lost_errors = (RayActorError, WorkerCrashedError, ObjectLostError)
        queue = collections.deque(units)  # units not tried yet
        retries: collections.deque[Unit] = collections.deque()  # units whose worker died while holding them
        in_flight: dict[Any, tuple[int, Unit | None]] = {}  # ref -> (worker, unit; None for its `ready` call)
        started, cpu_started = time.monotonic(), time.process_time()
        losses, restarts, fruitless_in_a_row = 0, 0, 0
        summaries: list[WorkSummary] = []
        last_warning = started

        def start(index: int) -> None:
            slot = self._start(index)
            in_flight[slot.actor.ready.remote()] = (index, None)

        def lose(index: int, failed: Unit | None, reason: str) -> None:
            """Replace worker ``index``; ``failed`` (the unit whose call reported the loss) and every other
            unit it held go back to the queue."""
            nonlocal losses, restarts, fruitless_in_a_row
            slot = self._slots.pop(index)
            ray.kill(slot.actor, no_restart=True)
            losses += 1
            fruitless_in_a_row = fruitless_in_a_row + 1 if slot.finished == 0 else 0
            held = [failed] if failed is not None else []
            for ref, (i, unit) in list(in_flight.items()):
                if i == index:
                    del in_flight[ref]
                    if unit is not None:
                        held.append(unit)
            LOG.warning("worker %d lost (%s); %d of its units go back to the queue", index, reason, len(held))
            for unit in held:
                retry(unit, reason)
            if fruitless_in_a_row > self.cluster.max_attempts:  # one deadly question alone is given up on first
                raise EngineFailure(f"{fruitless_in_a_row} workers in a row were lost before finishing any work; "
                                    f"last: {reason}")
            restarts += 1
            start(index)

        def retry(unit: Unit, reason: str) -> None:
            unit.attempts += 1
            if unit.attempts >= self.cluster.max_attempts:
                why = f"gave up after {unit.attempts} lost workers; last: {reason}"[:500]
                LOG.warning("questions %s: %s", ", ".join(unit.question_ids[:5]), why)
                committer.give_up(unit, self.work.failed_rows(unit, why))
            else:
                retries.append(unit)

        for index in range(self.workers):
            start(index)
        commit_seconds = 0.0
        while queue or retries or any(unit is not None for _, unit in in_flight.values()):
            for slot in self._slots.values():
                while slot.ready and slot.load < self.work.units_in_flight:
                    if retries and not slot.holds_retry:  # one retried unit per worker: a deadly one takes
                        unit, slot.holds_retry = retries.popleft(), True  # no other retried unit down with it
                    elif queue:
                        unit = queue.popleft()
                    else:
                        break
                    in_flight[slot.actor.process.remote(unit.payload)] = (slot.index, unit)
                    slot.load += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
            if ready:
                ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
            elif (queue or retries) and not any(s.ready for s in self._slots.values()) and \
                    time.monotonic() - last_warning > WAITING_WARNING_SECONDS:
                last_warning = time.monotonic()
                LOG.warning("no worker is ready yet (%d units queued): waiting for the cluster's resources or "
                            "engine start-up", len(queue) + len(retries))
            for ref in ready:
                if ref not in in_flight:  # dropped with a worker lost earlier in this batch
                    continue
                index, unit = in_flight.pop(ref)
                slot = self._slots[index]
                try:
                    result = ray.get(ref)
                except lost_errors as exc:
                    lose(index, unit, _first_line(exc))
                    continue
                except RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    if isinstance(cause, WorkerBroken):
                        lose(index, unit, str(cause))
                        continue
                    raise PrmfactoryError(f"{self.work.label}: a worker failed on questions "
                                          f"{', '.join(unit.question_ids[:5]) if unit else '?'}: "
                                          f"{_first_line(cause)}") from exc
                if unit is None:
                    slot.ready = True
                    self.description.setdefault("worker_starts", []).append(
                        {"worker": index, **result, "ready_after_s": round(time.monotonic() - started, 2)})
                    continue
                slot.load -= 1
                slot.finished += 1
                slot.holds_retry = slot.holds_retry and unit.attempts == 0
                fruitless_in_a_row = 0
                tick = time.perf_counter()
                committer.accept(unit, result)
                commit_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        committer.flush()
        commit_seconds += time.perf_counter() - tick
        for slot in [s for s in self._slots.values() if s.ready]:  # one still starting has nothing to report
            try:
                summaries.append(ray.get(slot.actor.close.remote(), timeout=CLOSE_TIMEOUT_SECONDS))
            except lost_errors + (RayTaskError, GetTimeoutError) as exc:
                LOG.warning("worker %d did not close cleanly: %s", slot.index, _first_line(exc))
        wall = time.monotonic() - started
        self.counts = {**merge_counts(summaries), "workers_lost": losses, "worker_restarts": restarts}
        self.engine_metrics = merge_engine_metrics([s.engine for s in summaries], wall)
        self.description["driver_commit_seconds"] = round(commit_seconds, 3)
        self.description["driver_cpu_seconds"] = round(time.process_time() - cpu_started, 3)
        self.description["wall_seconds"] = round(wall, 2)
