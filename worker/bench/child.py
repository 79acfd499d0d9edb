"""Loading the league in a child process.

The bench reports the peak RSS of its own process, which runs the worker. A
league of tens of thousands of matches held as Python objects would dwarf the
worker, so it is generated and written by a spawned child that reports its
progress, then its :class:`~worker.bench.loader.LoadReport`, through a pipe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from worker.bench.loader import LoadReport, ProgressSink, load_league
from worker.bench.options import BenchOptions
from worker.core.settings import Settings

POLL_SECONDS = 0.05
Loader = Callable[[Settings, str, BenchOptions, ProgressSink], Coroutine[Any, Any, LoadReport]]
"""A module-level loader (the child finds it by name): load_league, load_lone_tenant."""


class LoadFailed(RuntimeError):
    """The child that loads the league failed; the message carries its traceback."""


def _child(
    loader: Loader, settings: Settings, dsn: str, options: BenchOptions, sender: PipeEnd
) -> None:
    def progress(stage: str, done: int, total: int) -> None:
        sender.send(("progress", stage, done, total))

    try:
        report = asyncio.run(loader(settings, dsn, options, progress))
    except BaseException:
        sender.send(("failed", traceback.format_exc()))
        raise SystemExit(1) from None
    sender.send(("done", report))


async def load_in_child(
    settings: Settings,
    dsn: str,
    options: BenchOptions,
    progress: ProgressSink,
    loader: Loader = load_league,
) -> LoadReport:
    """Run ``loader`` (by default :func:`~worker.bench.loader.load_league`) in a spawned process."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(loader, settings, dsn, options, sender),
        name="bench-loader",
        daemon=True,
    )
    process.start()
    sender.close()
    try:
        return await _follow(receiver, process.is_alive, progress)
    finally:
        receiver.close()
        if process.is_alive():
            process.terminate()
        await asyncio.to_thread(process.join, 10)


async def _follow(
    receiver: PipeEnd, alive: Callable[[], bool], progress: ProgressSink
) -> LoadReport:
    while True:
        if not receiver.poll():
            if not alive() and not receiver.poll():
                raise LoadFailed("the league loader exited without a report")
            await asyncio.sleep(POLL_SECONDS)
            continue
        try:
            message: tuple[Any, ...] = receiver.recv()
        except EOFError:
            raise LoadFailed("the league loader exited without a report") from None
        kind = message[0]
        if kind == "progress":
            progress(message[1], message[2], message[3])
        elif kind == "done":
            report: LoadReport = message[1]
            return report
        else:
            raise LoadFailed(f"loading the league failed:\n{message[1]}")
