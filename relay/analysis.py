"""Message analysis (`fingerprint.prepare`) in worker processes, with a time limit.

Whether a message is analysed is decided by its To: header, which any sender on the Internet
writes, so analysis must not be able to stop the relay: in a thread it holds the GIL (the event
loop, every other client's greeting and mail, waits) and its memory is the relay's. Here each
analysis runs in one of a few long-lived worker processes (started with `spawn`: nothing of the
relay's threads or sockets is inherited). A worker that does not answer within the time limit
is killed and replaced, and the caller hears `None` (the message is then delivered untouched);
a worker whose memory grew past RECYCLE_KIB after a message is replaced too.

What crosses the boundary: the message bytes, the key and the scheme.Scheme one way; the Prepared
object the other way, without its `raw` (the parent has those bytes). For the 35 KB benchmark
message the Prepared pickle is about 190 KB, and the analysis takes 40 ms in a worker against
30 ms in a thread (bench/hostile.py).

The same workers make the copies of a fan-out (`Analyser.render`): the parent sends a batch of
recipients and, the first time a worker sees the message, the Prepared object with its `raw`;
the worker keeps the last KEEP_LOADED messages and answers with the copies' bytes, ready
for the wire (CRLF line ends and dot-stuffing checked and done there). Rendering
thus runs on the other core and never holds the relay's event loop; the parent only receives
bytes (relay.delivery falls back to rendering itself if a worker fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .smtpclient import wire_body

if TYPE_CHECKING:
    from .fingerprint import Prepared
    from .scheme import Scheme

log = logging.getLogger("relay")

WORKERS = 2  # analyses at a time (2 cores: one hostile message cannot hold up the next)
STARTUP_LIMIT = 60.0  # seconds for a new worker to import what it needs
RECYCLE_KIB = 200 * 1024  # a worker whose resident memory passed this after a job is replaced
KEEP_LOADED = 2  # messages a worker keeps for rendering copies


@dataclass(frozen=True)
class Job:
    raw: bytes
    sender: str
    key_id: str
    key: bytes
    scheme: Scheme
    max_text: int | None


@dataclass(frozen=True)
class RenderJob:
    token: str  # names one fan-out's message in the worker
    prepared: Prepared | None  # with its raw; None when the worker should have it already
    rcpts: list[str]


class AnalysisFailed(Exception):
    """The worker stopped answering (time limit) or died; the message is left untouched."""


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Worker main loop: one Job in, ("ok", Prepared without raw, rss) or ("error", text, rss)
    out."""
    from . import fingerprint

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the relay, which stops us
    logging.getLogger("relay").setLevel(logging.WARNING)  # the parent logs what matters
    conn.send(("ready", None, _rss_kib()))
    loaded: dict[str, Prepared] = {}  # token -> message, least recently used first
    while True:
        try:
            job: Job | RenderJob = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(job, RenderJob):
            conn.send(_render(job, loaded))
            continue
        try:
            p = fingerprint.prepare(job.raw, job.sender, job.key_id, job.key, job.scheme,
                                    max_text=job.max_text)
            p.raw = b""
            result: tuple[str, Any, int] = ("ok", p, _rss_kib())
        except Exception as e:  # reported to the parent, which answers 451 as before
            result = ("error", f"{type(e).__name__}: {e}", _rss_kib())
        del job
        conn.send(result)


def _render(job: RenderJob, loaded: dict[str, Prepared]) -> tuple[str, Any, int]:
    p = job.prepared if job.prepared is not None else loaded.pop(job.token, None)
    if p is None:
        return ("missing", None, _rss_kib())
    loaded.pop(job.token, None)
    loaded[job.token] = p
    while len(loaded) > KEEP_LOADED:
        del loaded[next(iter(loaded))]
    try:  # ready for the wire (CRLF, dot-stuffed): that work is done here too
        return ("ok", [wire_body(p.copy_for(r)) for r in job.rcpts], _rss_kib())
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}", _rss_kib())


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True,
                                name="relay-analysis")
        self.proc.start()
        child.close()
        self.ready = False
        self.loaded: set[str] = set()  # render tokens this worker was sent

    def call(self, job: Job | RenderJob, limit: float) -> tuple[str, Any, int]:
        """Blocking: send the job and wait up to `limit` seconds for the answer (a new worker's
        start-up, about 0.3 s of imports, does not count)."""
        self.wait_ready()
        self.conn.send(job)
        if not self.conn.poll(limit):
            raise TimeoutError
        return self.conn.recv()  # EOFError when the worker died

    def wait_ready(self) -> None:
        if not self.ready:
            if not self.conn.poll(STARTUP_LIMIT):
                raise TimeoutError
            self.conn.recv()
            self.ready = True

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid


class Analyser:
    """A few worker processes; `prepare()` hands a job to an idle one."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.size = workers
        self._ctx = multiprocessing.get_context("spawn")
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="relay-analysis")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: set[_Worker] = set()
        self._closed = False

    def start(self) -> None:
        self._idle = asyncio.Queue()
        for _ in range(self.size):
            self._add()

    async def ready(self) -> None:
        """Wait until every idle worker has started (imports done), so that the first message
        does not wait for them."""
        assert self._idle is not None
        loop = asyncio.get_running_loop()
        waiting = [w for w in self._all if not w.ready]
        await asyncio.gather(*(loop.run_in_executor(self._threads, w.wait_ready)
                               for w in waiting), return_exceptions=True)

    def _add(self) -> None:
        assert self._idle is not None
        w = _Worker(self._ctx)
        self._all.add(w)
        self._idle.put_nowait(w)

    def _replace(self, w: _Worker) -> None:
        self._all.discard(w)
        w.kill()
        if not self._closed:
            self._add()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._all if w.pid is not None]

    async def prepare(self, job: Job, limit: float, wait_until: float) -> Prepared:
        """The Prepared message (its `raw` is job.raw). Raises AnalysisFailed when the worker
        took longer than `limit` seconds or died, TimeoutError when no worker became free before
        the loop time `wait_until`, RuntimeError for an error inside the analysis."""
        assert self._idle is not None, "start() first"
        loop = asyncio.get_running_loop()
        w = await asyncio.wait_for(self._idle.get(), max(0.001, wait_until - loop.time()))
        status, value, rss = await self._run(w, job, limit, "analysis")
        self._release(w, rss)
        if status != "ok":
            raise RuntimeError(value)
        value.raw = job.raw
        return value

    async def render(self, token: str, prepared: Prepared, rcpts: list[str], limit: float
                     ) -> list[bytes]:
        """The copies of `prepared` for `rcpts` as they go after DATA (smtpclient.wire_body),
        made by an idle worker (which is sent the message the first time it renders `token`).
        Raises AnalysisFailed when the worker took longer than `limit` seconds or died,
        RuntimeError for an error inside the rendering."""
        assert self._idle is not None, "start() first"
        w = await self._idle.get()
        job = RenderJob(token, None if token in w.loaded else prepared, rcpts)
        status, value, rss = await self._run(w, job, limit, "rendering")
        if status == "missing":  # the worker let go of it (or was never sent it)
            job = RenderJob(token, prepared, rcpts)
            status, value, rss = await self._run(w, job, limit, "rendering")
        if len(w.loaded) > 64:  # forget old fan-outs (a "missing" answer recovers anyway)
            w.loaded.clear()
        w.loaded.add(token)
        self._release(w, rss)
        if status != "ok":
            raise RuntimeError(value)
        return value

    async def _run(self, w: _Worker, job: Job | RenderJob, limit: float, what: str
                   ) -> tuple[str, Any, int]:
        """One job on worker `w` (taken from the idle queue): its (status, value, rss). A worker
        that timed out, died or was abandoned (the caller cancelled) is replaced, never reused."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, w.call, job, limit)
        except TimeoutError:
            self._replace(w)
            raise AnalysisFailed(f"{what} took longer than {limit:g} s") from None
        except (EOFError, OSError) as e:
            self._replace(w)
            raise AnalysisFailed(f"analysis worker died ({type(e).__name__})") from None
        except BaseException:  # cancelled while the worker runs: its answer would be stale
            self._replace(w)
            raise

    def _release(self, w: _Worker, rss: int) -> None:
        """Back to the idle queue, or replaced when its memory grew past RECYCLE_KIB."""
        if rss > RECYCLE_KIB:
            self._replace(w)
        else:
            self._idle.put_nowait(w)

    def close(self) -> None:
        self._closed = True
        for w in list(self._all):
            w.kill()
        self._all.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)
