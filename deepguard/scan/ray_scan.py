"""The Ray side of a scan: the cluster, one :class:`~deepguard.runtime.pipeline.Detector` per actor, the dataset.

The driver lists the pending files lazily and ``ray.put``s them in blocks of ``--block`` entries, keeping only
the object refs; the Ray Data dataset is one row per block id, and the actor that gets a block id fetches the
block, analyses its files and returns one JSON row per file. So the file list never sits in the driver's memory
(it is in Ray's object store, spilled to disk if large), each actor loads the model once, and results stream
back to the driver as blocks finish. Ray Data restarts a killed actor and retries its block; the driver writes a
row only once per key (:mod:`deepguard.scan.ledger`).

Ray version: the ``scan`` extra pins ``ray[data]`` below 2.54. From 2.54 on, the raylet waits a hard-coded 15 s
for the dashboard agent to write its port files and aborts otherwise (ray-project/ray#65983), which is what
happens to a local Ray started on a machine whose cores are busy (seen here next to a training job).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator

from deepguard.errors import ModelError
from deepguard.scan.files import Entry

FATAL = "fatal"  # the verdict of the one row an actor returns when its Detector cannot be built


def start(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (``auto`` or HOST:PORT), or start a local Ray sized to this machine.

    Returns True when this call connected (the caller then calls ``ray.shutdown()``), False when this process
    was already connected (an embedding program's Ray is reused as it is). Local Ray: no dashboard, no usage
    statistics, nothing fetched; worker logs stay in Ray's session folder instead of the driver's terminal.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            _system_config={"enable_metrics_collection": False},  # no metrics agent to wait for or export to
            **quiet,
        )
    return True


def _quiet_ray_data() -> None:
    """Ray Data's own console log down to warnings: the driver's bar and summary say what happened."""
    for h in logging.getLogger("ray.data").handlers:
        if "File" not in type(h).__name__:  # its console handler; the session log file keeps everything
            h.setLevel(logging.WARNING)


def pool_args(actors: int | None = None, providers: str | None = None) -> dict:
    """Actor pool size and per-actor resources: one actor per GPU where the cluster has GPUs, else per CPU."""
    import ray
    import ray.data

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus and providers not in ("cpu", "CPUExecutionProvider"):
        return {"compute": ray.data.ActorPoolStrategy(size=actors or gpus), "num_gpus": 1}
    return {
        "compute": ray.data.ActorPoolStrategy(size=actors or max(1, int(res.get("CPU", 1)))),
        "num_cpus": 1,
    }


def put_blocks(entries: Iterable[Entry], block: int) -> tuple[list, int]:
    """``ray.put`` the entries in blocks of ``block``; the refs and how many entries there were."""
    import ray

    refs, chunk, n = [], [], 0
    for e in entries:
        chunk.append(e.to_dict())
        n += 1
        if len(chunk) >= block:
            refs.append(ray.put(chunk))
            chunk = []
    if chunk:
        refs.append(ray.put(chunk))
    return refs, n


class AnalyzeBlocks:
    """A Ray Data callable class: builds its Detector once, then turns block ids into result rows."""

    def __init__(self, options: dict, blocks: list) -> None:
        from deepguard.errors import DeepGuardError
        from deepguard.options import detector_from_args

        self.blocks, self.error = blocks, None
        try:
            self.detector = detector_from_args(argparse.Namespace(**options))
        except DeepGuardError as e:  # sent as a FATAL row: raised here, it would reach the driver untyped
            self.error = str(e)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if self.error is not None:
            keys, verdicts, rows = [""], [FATAL], [self.error]
        else:
            keys, verdicts, rows = self._analyze(batch["block"])
        return {
            k: np.array(v, dtype=object) for k, v in (("key", keys), ("verdict", verdicts), ("row", rows))
        }

    def _analyze(self, block_ids) -> tuple[list, list, list]:
        import ray

        from deepguard.output import to_record
        from deepguard.scan.ledger import result_row

        keys, verdicts, rows = [], [], []
        for i in block_ids:
            for entry in ray.get(self.blocks[int(i)]):
                rec = to_record(self.detector.analyze(entry["path"]))  # bad files give an error row, no raise
                keys.append(entry["key"])
                verdicts.append(rec["verdict"])
                rows.append(json.dumps(result_row(rec, entry), ensure_ascii=False))
        return keys, verdicts, rows


def detector_options(args: argparse.Namespace, pool: dict) -> dict:
    """The ``add_runtime_args`` options for the actors; one intra-op thread per CPU actor unless --threads."""
    opts = {k: v for k, v in vars(args).items() if k != "func"}
    if opts.get("threads") is None and "num_cpus" in pool:
        opts["threads"] = 1
    return opts


def results(refs: list, args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(key, verdict, JSON row) for every file in the blocks ``refs``, in completion order."""
    import ray
    import ray.data

    _quiet_ray_data()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own bar (files, not blocks)
    ctx.execution_options.preserve_order = False
    pool = pool_args(args.actors, args.providers)
    # one Ray Data block (so one actor task) per block of files: actors share the work evenly
    ds = ray.data.from_items([{"block": i} for i in range(len(refs))], override_num_blocks=len(refs))
    ds = ds.map_batches(
        AnalyzeBlocks,
        fn_constructor_kwargs={"options": detector_options(args, pool), "blocks": refs},
        batch_size=1,
        batch_format="numpy",
        **pool,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for key, verdict, row in zip(batch["key"], batch["verdict"], batch["row"], strict=True):
            if verdict == FATAL:  # the detector could not be built (bad --model etc.): the scan stops, exit 2
                raise ModelError(row)
            yield key, verdict, row
