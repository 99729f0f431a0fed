"""What one box runs to serve the fleet, assembled in one place: the GPUs and capabilities
found, the worker node (pool, metrics), the batch lanes beside it, the schedule firing and
the sweep of staged inputs no DAG uses any more.
The ``worker`` command runs a whole box; ``submit`` runs a small one in-process (no
lanes, no scheduler, no GPU trials) while it shows progress.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

from mediajobs.schedule_firing import run_scheduler
from mediajobs.staged_inputs import run_sweeper
from workers.batch import LaneSupervisor, lanes_for
from workers.gpu import Capabilities, detect
from workers.node import NodeConfig, WorkerNode

# The media stages and the planner of inputs probed on a worker (mediajobs.remote_plan)
# always; a box may import a user's own stage modules too.
MEDIA_STAGES = ("stages", "mediajobs.remote_plan")


@dataclass(frozen=True)
class BoxSpec:
    """What the box is asked to run (the ``worker`` command's options)."""

    queues: tuple[str, ...] = ("default",)
    tags: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()  # extra modules that register stages
    concurrency: int | None = None  # None: the CPU cores
    min: int = 1
    max: int | None = None
    adaptive: bool = True
    grace: float = 30.0
    lease: float = 30.0
    heartbeat: float = 2.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    use_gpus: bool = True  # False: no GPU trials (--no-gpu)
    only_gpus: tuple[int, ...] | None = None  # --gpus 0,1
    lanes: bool = True  # batch lanes for the stages the tags cover
    schedules: bool = True  # fire due schedules from this box too
    # Delete staged inputs no DAG uses any more (mediajobs/staged_inputs.py), on the
    # retention interval.
    sweep_staged: bool = True


def capabilities(spec: BoxSpec) -> Capabilities:
    """The GPUs and capabilities this box has for ``spec`` (trial runs, so it takes time)."""
    only = list(spec.only_gpus) if spec.only_gpus is not None else None
    return detect(disabled=not spec.use_gpus, only=only)


class WorkerBox:
    """The node and its lanes, started and stopped together."""

    def __init__(
        self,
        node: WorkerNode,
        lanes: LaneSupervisor | None,
        grace: float,
        *,
        sweep_staged: bool = False,
    ) -> None:
        self.node = node
        self.lanes = lanes
        self.grace = grace
        self.sweep_staged = sweep_staged

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; the process exit code (``ExitCode``)."""
        if self.lanes is not None:
            self.lanes.start()
        stop = threading.Event()
        if self.sweep_staged:
            # Where the store's credentials are: the staged inputs' deletions.
            threading.Thread(
                target=run_sweeper,
                args=(self.node.url, self.node.config.namespace, stop),
                name="staged-sweeper",
                daemon=True,
            ).start()
        try:
            return self.node.run(install_signals=install_signals)
        finally:
            stop.set()
            if self.lanes is not None:
                self.lanes.stop(self.grace)

    def request_stop(self) -> None:
        """A first call drains (running jobs get the grace period), a second stops now."""
        self.node.request_stop()


def assemble(
    url: str | None, namespace: str, spec: BoxSpec, caps: Capabilities | None = None
) -> WorkerBox:
    """A box for ``spec``, its stage modules imported; ``caps`` found here unless given."""
    modules = (*MEDIA_STAGES, *spec.imports)
    for module in modules:
        importlib.import_module(module)
    if caps is None:
        caps = capabilities(spec)
    tags = tuple(dict.fromkeys([*spec.tags, *caps.tags()]))
    queues = list(spec.queues)
    lanes = lanes_for(queues, tags) if spec.lanes else []
    config = NodeConfig(
        queues=queues,
        tags=tags,
        batch_queues=tuple(lane.queue for lane in lanes),
        gpus="; ".join(f"{g.index}: {g.name} {g.memory_mib} MiB" for g in caps.gpus),
        concurrency=spec.concurrency,
        min=spec.min,
        max=spec.max,
        adaptive=spec.adaptive,
        grace=spec.grace,
        lease=spec.lease,
        heartbeat=spec.heartbeat,
        preload=modules,
        namespace=namespace,
        metrics_port=spec.metrics_port,
        metrics_host=spec.metrics_host,
    )
    node = WorkerNode(url, config=config, scheduler=run_scheduler if spec.schedules else None)
    supervisor = (
        LaneSupervisor(node.url, namespace, lanes, tags, modules, spec.lease) if lanes else None
    )
    return WorkerBox(node, supervisor, spec.grace, sweep_staged=spec.sweep_staged)
