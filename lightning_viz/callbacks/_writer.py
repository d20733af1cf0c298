"""Rendering and writing off the training thread.

A probe hands its results to :class:`BackgroundWriter`: scalars and text as they are, images as functions that
render them (tile panels, overlays, PNG encoding). One worker thread renders and writes them to the
``SummaryWriter`` and flushes after each probe step, so TensorBoard shows the step at once. The queue is bounded:
when it is full the training thread waits, and the waits are counted (``viz/writer/waits``).

The worker keeps out of training's way on a CPU: it runs no torch operation (panels are drawn with numpy and
Pillow: a torch operation on a second thread starts a second OpenMP thread team, which slowed every later training
step by 10-20 % on two cores), and it starts nothing while the training thread probes (:meth:`BackgroundWriter.held`).

TensorBoard's own event writer computes the CRC32C of every record in pure Python, byte by byte (about 0.2 s per
MB); :func:`use_native_crc32c` swaps in ``google-crc32c``'s native implementation, which gives the same bytes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BackgroundWriter", "Written", "masked_crc32c", "use_native_crc32c"]

Image = np.ndarray | Callable[[], np.ndarray]  # an array, or a function that draws one


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data`` (the checksum TensorBoard's event files carry), computed natively."""
    import google_crc32c

    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def use_native_crc32c() -> bool:
    """Make TensorBoard's record writer use :func:`masked_crc32c`; False where ``google-crc32c`` has no native
    build here (its pure-Python fallback is no faster) or the writer is not TensorBoard's."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if getattr(google_crc32c, "implementation", "python") != "c" or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = masked_crc32c  # the same checksum; looked up at each record
    return True


@dataclass
class Written:
    """What one probe of one monitor writes: images (arrays or functions that render them), scalars and text."""

    step: int
    images: dict[str, Image] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    timing: str | None = None  # tag of the rendering time in ms, logged by the worker
    done: Callable[[float], None] | None = None  # told the seconds the worker spent on this item


_FLUSH = object()
_STOP = object()


class BackgroundWriter:
    """Renders and writes probe results to a ``SummaryWriter`` on a worker thread.

    Args:
        writer: the ``SummaryWriter`` (a ``TensorBoardLogger``'s ``experiment``).
        max_queue: probe results that may wait; training waits when more are pending.
    """

    def __init__(self, writer: Any, max_queue: int = 16) -> None:
        self.writer = writer
        self.waits = 0
        self.seconds = 0.0  # CPU time spent rendering and writing (counts against the budget)
        self.image_bytes: dict[int, int] = {}  # the encoded pictures' bytes written, by step
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared while the training thread probes: the worker then waits
        self._open.set()
        self._thread = threading.Thread(target=self._work, name="lightning_viz-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Written | object) -> None:
        """Queue ``item``; blocks (and counts a wait) only while the queue is full."""
        if not self._thread.is_alive():
            raise RuntimeError("the lightning_viz writer thread has stopped")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.waits += 1
            self._open.set()  # a held worker would never make room
            self._queue.put(item)

    def flush(self) -> None:
        """Queue a flush of the event file after what is queued (TensorBoard then shows it)."""
        self.submit(_FLUSH)

    def drain(self) -> None:
        """Wait until everything queued is written and flushed."""
        if self._thread.is_alive():
            self._queue.put(_FLUSH)
            self._queue.join()

    def close(self) -> None:
        """Drain and stop the worker."""
        if self._thread.is_alive():
            self.drain()
            self._queue.put(_STOP)
            self._thread.join()

    def idle(self) -> bool:
        """Whether everything queued has been written."""
        return self._queue.unfinished_tasks == 0

    def errors(self) -> list[BaseException]:
        """The errors the worker met since the last call (each failed item is skipped, the rest written)."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the worker from starting another item while the training thread probes: the probe's computations
        use both cores' compute threads, and a worker beside them stalls them (one descheduled compute thread
        holds up the rest at every operation)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            self._open.wait()
            try:
                if item is _STOP:
                    return
                if item is _FLUSH:
                    self.writer.flush()
                else:
                    self._write(item)
            except Exception as error:  # reported on the training thread, as a failed probe
                with self._lock:
                    self._errors.append(error)
            finally:
                self._queue.task_done()

    def _write(self, item: Written) -> None:
        """Scalars and text first, then each image on its own: a panel that fails to draw loses only itself."""
        start = time.thread_time()  # CPU time: the thread's wall time counts the training thread's work too
        try:
            self._write_items(item, start)
        finally:
            self.seconds += time.thread_time() - start

    def _write_items(self, item: Written, start: float) -> None:
        for tag, value in item.scalars.items():
            self.writer.add_scalar(tag, value, item.step)
        for tag, text in item.texts.items():
            self.writer.add_text(tag, text, item.step)
        failed: Exception | None = None
        for tag, image in item.images.items():
            try:
                self._add_image(tag, image() if callable(image) else image, item.step)
            except Exception as error:
                failed = failed or error
        if item.timing is not None:
            self.writer.add_scalar(item.timing, 1000 * (time.thread_time() - start), item.step)
        if item.done is not None:
            item.done(time.thread_time() - start)
        if failed is not None:
            raise failed

    def _add_image(self, tag: str, array: np.ndarray, step: int) -> None:
        """``add_image``, with the PNG encoded by :func:`~lightning_viz.render.encode_png` (unfiltered rows, ISA-L's
        fastest deflate): a tenth of the time of Pillow's fastest settings on our panels."""
        file_writer = getattr(self.writer, "_get_file_writer", None)  # torch's and tensorboardX's SummaryWriter
        if file_writer is None or array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            self.writer.add_image(tag, array, step, dataformats="HWC")
            self.image_bytes[step] = self.image_bytes.get(step, 0) + array.nbytes  # at most, encoded
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        from lightning_viz.render import encode_png

        png = encode_png(array)
        encoded = Summary.Image(height=array.shape[0], width=array.shape[1], colorspace=3, encoded_image_string=png)
        self.image_bytes[step] = self.image_bytes.get(step, 0) + len(png)
        file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)
