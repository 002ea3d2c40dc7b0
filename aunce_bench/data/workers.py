"""Worker processes of the data sources (SynthAU rendering, face preparation, streamed frame decoding)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

import cv2

# Workers fork from a fork server, not from this process: in a fork of a process whose OpenCV thread pool has
# already run (any earlier resize, warp or blur), setting OpenCV's thread count deadlocks. The server starts
# once per process with the worker modules imported, so later pools start fast (spawn where there is none).
if "forkserver" in multiprocessing.get_all_start_methods():
    _CONTEXT = multiprocessing.get_context("forkserver")
    _CONTEXT.set_forkserver_preload([
        "aunce_bench.data.synth.generate", "aunce_bench.data.faces", "aunce_bench.data.loaders"])
else:
    _CONTEXT = multiprocessing.get_context("spawn")


def process_context() -> multiprocessing.context.BaseContext:
    """How worker processes start (see above); DataLoader workers decoding frames use it too."""
    return _CONTEXT


def process_pool(workers: int) -> Executor:
    """`workers` processes with single-threaded OpenCV, or this process alone when `workers` is 1."""
    if workers <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(workers, mp_context=_CONTEXT, initializer=cv2.setNumThreads, initargs=(1,))


class InlineExecutor(Executor):
    """Runs `map` in this process (one worker): no process start-up, same results."""

    def map(self, function, *iterables, timeout=None, chunksize=1):
        return map(function, *iterables)
