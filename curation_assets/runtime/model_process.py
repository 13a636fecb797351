"""The model in a process of its own: its runtime and weights never enter the Dagster process.

The largest process stays under 1 GB (torch alone is 650 MB resident with its CUDA
libraries; the default, onnxruntime, about 200 MB), and the headless command starts this
process before the first source is read, so the model loads on the second core meanwhile.
The caller sends stored JPEGs and gets vectors back. Nothing here imports Dagster (nor does
anything the spawned process imports: it loads this module and ``core.embedder`` only).
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from curation_assets.core.embedder import Embedder, EmbedderError
from curation_assets.core.progress import Stopwatch
from curation_assets.runtime.allocator import keep_frame_buffers

CHUNK = 64  # stored JPEGs per message to the model process (two in flight)
POLL_S = 1.0  # how often each side looks whether the other is still there
MODEL_TRIM_BYTES = 64 << 20  # free memory the model process keeps for reuse: 256 MB would cost 60 MB resident


@dataclass(frozen=True)
class ModelInfo:
    """What the model process reports once its weights are loaded."""

    dim: int
    description: dict


class ModelProcess:
    """One child process holding the model; requests and answers go through two queues."""

    def __init__(self, settings: dict):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks inherited
        self.requests, self.answers = context.Queue(), context.Queue()
        self.process = context.Process(
            target=serve, args=(settings, self.requests, self.answers, os.getpid()), name="curation-model", daemon=True
        )
        self.process.start()
        # If the process dies, what is still queued for it can never be written: the queue's
        # feeder thread would block on the full pipe and hang this interpreter's exit.
        self.requests.cancel_join_thread()
        self._info: ModelInfo | None = None
        self.precision_min_cosine: float | None = None  # measured there on its first batch
        self._lock = threading.Lock()  # one conversation at a time

    def _answer(self):
        while True:
            try:
                kind, payload = self.answers.get(timeout=POLL_S)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"the model process died (exit code {self.process.exitcode})") from None
                continue
            if kind == "error":
                raise EmbedderError(payload)
            return payload

    def info(self) -> ModelInfo:
        with self._lock:
            if self._info is None:
                self._info = self._answer()
            return self._info

    def embed(self, images: Iterable[Callable[[], bytes]], watch: Stopwatch) -> np.ndarray:
        """Vectors of encoded images, in order: reading here overlaps the model's work there."""
        info = self.info()
        with self._lock:
            try:
                return self._embed(images, watch, info)
            except BaseException:
                # answers to chunks already sent may still arrive: a later call must not read them
                # as its own, so this process is done; model_process() starts a new one
                self.abandon()
                raise

    def abandon(self) -> None:
        """End the process at once and drop what its queues still hold."""
        self.process.kill()
        self.process.join(timeout=5)
        for q in (self.requests, self.answers):
            q.cancel_join_thread()
            q.close()

    def _embed(self, images: Iterable[Callable[[], bytes]], watch: Stopwatch, info: ModelInfo) -> np.ndarray:
        out, sent, received = [], 0, 0
        chunk: list[bytes] = []
        for load in images:
            with watch.stage("read stored frames"):
                chunk.append(load())
            if len(chunk) == CHUNK:
                self.requests.put(("embed", chunk))
                chunk, sent = [], sent + 1
                if sent - received > 2:
                    out.append(self._vectors(watch))
                    received += 1
        if chunk:
            self.requests.put(("embed", chunk))
            sent += 1
        while received < sent:
            out.append(self._vectors(watch))
            received += 1
        return np.concatenate(out) if out else np.zeros((0, info.dim), dtype=np.float32)

    def _vectors(self, watch: Stopwatch) -> np.ndarray:
        vectors, seconds, self.precision_min_cosine = self._answer()
        for stage, s in seconds.items():
            watch.add(f"model process: {stage}", s)
        return vectors


_PROCESSES: dict[tuple, ModelProcess] = {}
_PROCESSES_LOCK = threading.Lock()


def model_process(settings: dict) -> ModelProcess:
    """This process's model process for ``settings``, started on first use (and again if it died)."""
    key = tuple(sorted(settings.items()))
    with _PROCESSES_LOCK:
        found = _PROCESSES.get(key)
        if found is None or not found.process.is_alive():
            if found is not None:
                found.abandon()
            if not _PROCESSES:
                atexit.register(stop_model_processes)  # before multiprocessing's own exit handler (LIFO)
            found = _PROCESSES[key] = ModelProcess(settings)
        return found


def stop_model_processes() -> None:
    """Stop every model process of this process and release their queues (a command that
    ends with ``os._exit`` calls this first, so nothing is left behind or reported leaked)."""
    with _PROCESSES_LOCK:
        found = list(_PROCESSES.values())
        _PROCESSES.clear()
    for proc in found:
        proc.requests.put(("stop", None))
    for proc in found:
        proc.process.join(timeout=5)
        if proc.process.is_alive():
            proc.process.kill()
        proc.requests.close()
        proc.answers.close()
    if found:
        del found, proc
        gc.collect()  # the queues' semaphores unregister from multiprocessing's tracker when collected


class RemoteEmbedder:
    """An Embedder whose model runs in a model process: the same names, calibration and
    description, and ``embed_encoded`` of stored JPEGs."""

    def __init__(self, local: Embedder, process: ModelProcess):
        self._local, self._process = local, process
        self.info = process.info()  # waits for the weights; an EmbedderError raised there comes here

    vector_name = property(lambda self: self._local.vector_name)
    calibration = property(lambda self: self._local.calibration)
    dim = property(lambda self: self.info.dim)

    def describe(self) -> dict:
        measured = {"precision_min_cosine_vs_fp32": self._process.precision_min_cosine}
        return {**self.info.description, **measured, "process": f"separate (pid {self._process.process.pid})"}

    def embed_encoded(self, images: Iterable[Callable[[], bytes]], watch: Stopwatch | None = None) -> np.ndarray:
        return self._process.embed(images, watch or Stopwatch())


def serve(settings: dict, requests, answers, parent: int) -> None:
    """The model process: load the weights, then embed what comes until the parent is gone.
    Ctrl-C is the parent's to handle: this process ends when its parent does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_frame_buffers(MODEL_TRIM_BYTES)  # activations, like frames, are reused instead of faulted in afresh
    try:
        model = Embedder(**settings)
        model.load()
        answers.put(("info", ModelInfo(model.dim, model.describe())))
    except Exception as exc:  # noqa: BLE001 - the parent raises it
        answers.put(("error", str(exc) if isinstance(exc, EmbedderError) else f"{type(exc).__name__}: {exc}"))
        return
    while os.getppid() == parent:
        try:
            kind, payload = requests.get(timeout=POLL_S)
        except queue.Empty:
            continue
        except (EOFError, OSError):  # the parent closed its end
            return
        if kind == "stop":
            return
        try:
            watch = Stopwatch()
            vectors = model.embed_encoded((lambda data=data: data for data in payload), watch)
            answers.put(("vectors", (vectors, watch.rounded(), model.precision_min_cosine)))
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            answers.put(("error", f"embedding failed in the model process: {type(exc).__name__}: {exc}"))
