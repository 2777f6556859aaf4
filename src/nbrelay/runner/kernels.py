"""Kernels for jobs: started ahead of time in a small pool per kernel name, each used by one job only.

Python kernels are forked from a preloaded zygote process (see zygote.py) when possible; any other kernel is
launched the usual way by jupyter_client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from nbrelay.runner.lifeline import child_is_kernel

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (our forked kernels) so that we can wait for them and read their exit."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def kernel_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a kernel gets: the server's, without the service's own settings (NBRELAY_*: its secret key,
    SMTP password, database and broker URLs), which a notebook could otherwise print into a report or use to sign
    a session as anyone. The zygote gets it too: a forked kernel's /proc/self/environ is the zygote's."""
    return {k: str(v) for k, v in env.items() if not k.startswith("NBRELAY_")}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` now, whatever session or process group each has joined (from each thread's
    /proc children list)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone meanwhile
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as listing:
                    children = [int(child) for child in listing.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


async def _reap(pids: list[int], within_s: float = 2.0) -> None:
    """Wait for killed processes that are (or become, as their parents die) our children; the others are their
    parents' or init's to reap."""
    left = set(pids)
    deadline = time.monotonic() + within_s
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # noqa: ASYNC222 - WNOHANG: never waits
                    left.discard(pid)
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    left.discard(pid)
        if left:
            await asyncio.sleep(0.005)


class ForkedProcess:
    """The Popen-like handle jupyter_client expects, for a kernel forked by the zygote and adopted by us."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Not (or no longer) our child: fall back to asking whether the pid still exists.
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = -1
            return self.returncode
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """Client of the zygote process (one per worker process); thread-safe."""

    def __init__(self, python: str = sys.executable):
        self._python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(kernel_environment(os.environ), PYDEVD_DISABLE_FILE_VALIDATION="1")
            proc = subprocess.Popen(
                [self._python, "-m", "nbrelay.runner.zygote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if not ready:
                raise RuntimeError("the kernel zygote exited at start")
            self._proc = proc
        return self._proc

    def spawn(
        self,
        args: list[str],
        cwd: str,
        env: dict[str, str],
        log_path: str | None = None,
        memory_max_bytes: int = 0,
        enter_file: str | None = None,
    ) -> int:
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            request = {
                "args": args,
                "cwd": cwd,
                "env": env,
                "log_path": log_path,
                "memory_max_bytes": memory_max_bytes,
                "enter_file": enter_file,  # runner/enter.py
            }
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline() or b'{"error": "zygote exited"}')
        if "pid" not in reply:
            raise RuntimeError(f"kernel fork failed: {reply.get('error')}")
        return int(reply["pid"])

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            with proc:  # closes both pipes and reaps the zygote
                if proc.poll() is None:
                    assert proc.stdin is not None
                    proc.stdin.close()  # end of requests: the zygote exits
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def forkable(argv: list[str]) -> list[str] | None:
    """The kernel's own arguments when `argv` starts an ipykernel of this interpreter; else None."""
    if len(argv) < 3 or argv[1] != "-m" or argv[2] not in ("ipykernel_launcher", "ipykernel"):
        return None
    try:
        same = os.path.realpath(argv[0]) == os.path.realpath(sys.executable) or argv[0] in (
            "python",
            "python3",
        )
    except OSError:
        return None
    return argv[3:] if same else None


class ForkProvisioner(LocalProvisioner):
    """Launches the kernel through the zygote when its command allows it, else like LocalProvisioner."""

    zygote: Zygote | None = None
    memory_max_bytes = 0
    enter_file: str | None = None  # a forked kernel's request file for entering its job's folder (runner/enter.py)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        args = forkable(cmd)
        env = kernel_environment(kwargs.pop("env", None) or os.environ)
        if self.zygote is None or args is None:
            # ipykernel's own parent check misses a parent that died before it started (other kernels have none)
            preexec = child_is_kernel(self.memory_max_bytes)
            return await super().launch_kernel(cmd, **kwargs, env=env, preexec_fn=preexec)
        env["JPY_PARENT_PID"] = str(os.getpid())
        # The kernel exits when this worker dies. ipykernel reads JPY_PARENT_PID into a default when it is
        # imported, which in the zygote is before any job: so say it on the command line too.
        args = [*args, f"--IPKernelApp.parent_handle={os.getpid()}"]
        cwd = str(kwargs.get("cwd") or os.getcwd())
        pid = await asyncio.to_thread(
            self.zygote.spawn, args, cwd, env, memory_max_bytes=self.memory_max_bytes, enter_file=self.enter_file
        )
        self.process = ForkedProcess(pid)  # type: ignore[assignment]  # Popen-like by design
        self.pid = self.pgid = pid
        self.cwd = cwd
        return self.connection_info


class _InfoKeepingClient(AsyncKernelClient):
    """A kernel client that keeps the kernel_info reply its wait for the kernel ended with."""

    kernel_info_reply: dict[str, Any] | None = None

    def _handle_kernel_info_reply(self, msg: dict[str, Any]) -> None:
        self.kernel_info_reply = msg
        super()._handle_kernel_info_reply(msg)


@dataclass
class Kernel:
    """A started kernel with its connected client, ready for one job."""

    name: str
    km: AsyncKernelManager
    kc: Any
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        process = getattr(self.km.provisioner, "process", None)
        return getattr(process, "pid", None)

    @property
    def enter_file(self) -> str | None:
        """Where to ask a forked kernel to enter a folder (runner/enter.py); None for a kernel launched otherwise."""
        provisioner = self.km.provisioner
        forked = isinstance(getattr(provisioner, "process", None), ForkedProcess)
        return getattr(provisioner, "enter_file", None) if forked else None

    @property
    def language(self) -> str:
        """The kernel's own language as its spec says it, lower case ("" when it says none)."""
        return str(getattr(self.km.kernel_spec, "language", None) or "").lower()

    @property
    def language_info(self) -> dict[str, Any] | None:
        """The language_info of the kernel's kernel_info reply, read when it started (it does not change)."""
        reply = getattr(self.kc, "kernel_info_reply", None)
        info = (reply or {}).get("content", {}).get("language_info")
        return dict(info) if isinstance(info, dict) else None

    def exit_code(self) -> int | None:
        process = getattr(self.km.provisioner, "process", None)
        return process.poll() if process is not None else None

    async def alive(self) -> bool:
        return bool(await self.km.is_alive())

    async def interrupt(self) -> None:
        try:
            await self.km.interrupt_kernel()
        except Exception as exc:  # a dead kernel cannot be interrupted; the kill that follows settles it
            log.debug("interrupt failed: %s", exc)

    async def shutdown(self) -> None:
        """Stop the kernel for good: no kernel process may outlive its job."""
        await self.kill()
        await self.release()

    async def kill(self) -> None:
        """End the kernel's process and everything it started, and reap them: its process group, and every
        process below it, also one that joined a session or group of its own (`start_new_session=True`), which
        would otherwise outlive the job, re-parented to the worker, or stay a zombie there.

        A used kernel has nothing to save, so it is killed outright and reaped at once (5 ms polls);
        jupyter_client's own shutdown would poll for the exit every 100 ms.
        """
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        process = getattr(self.km.provisioner, "process", None)
        if process is not None and process.poll() is None:
            family = descendants(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in family:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - no exit event to await
                await asyncio.sleep(0.005)
            await _reap(family)

    async def release(self) -> None:
        """jupyter_client's clean-up once the process is gone (its connection files and sockets; ~10 ms, nothing
        a job waits for: KernelPool.release_later), or the kill where the process is still there."""
        if self.enter_file is not None:  # left when the kernel was killed before it read it
            for leftover in (self.enter_file, f"{self.enter_file}.partial"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        try:
            await self.km.shutdown_kernel(now=True)
        except Exception as exc:
            log.debug("kernel shutdown: %s", exc)
            process = getattr(self.km.provisioner, "process", None)
            if process is not None and process.poll() is None:
                process.kill()


class KernelPool:
    """Keeps `size` started kernels per kernel name; hands each out once and refills in the background."""

    def __init__(self, *, size: int, cwd: Path, startup_timeout_s: float, fork: bool = True, memory_max_bytes: int = 0):
        self.size = size
        self.memory_max_bytes = memory_max_bytes
        self.cwd = cwd
        self.startup_timeout_s = startup_timeout_s
        self.zygote = Zygote() if fork and become_subreaper() else None
        # One ZeroMQ context for every kernel's manager and client: jupyter_client would make two per kernel,
        # each with an I/O thread started and joined again (~2 ms of CPU a kernel).
        self._zmq = zmq.asyncio.Context()
        # No queue limit on what a kernel sends: ZeroMQ drops the messages past it, unseen (a cell that displays
        # 20,000 values lost thousands), and the kernel's output is cut with a note by the output caps instead.
        self._zmq.rcvhwm = 0
        self._ready: dict[str, deque[Kernel]] = {}
        self._filling: dict[str, set[asyncio.Task[None]]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start_kernel(self, name: str, cwd: Path | None = None) -> Kernel:
        km = AsyncKernelManager(kernel_name=name, transport="ipc", context=self._zmq)
        km.client_factory = _InfoKeepingClient
        km.shutdown_wait_time = 1.0
        # Every kernel goes through ForkProvisioner: forked by the zygote when it can be, else launched, and held
        # to the worker's life and the memory limit either way.
        km.kernel_id = km.kernel_id or os.urandom(8).hex()
        provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
        provisioner.zygote = self.zygote
        provisioner.memory_max_bytes = self.memory_max_bytes
        km.provisioner = provisioner
        # The worker's private runtime folder (nbrelay.runtime), never a folder shared with other instances.
        ipc_dir = Path(os.environ.get("NBRELAY_RUNTIME_DIR") or tempfile.gettempdir())
        ipc_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        km.ip = str(ipc_dir / f"k-{os.urandom(6).hex()}")
        provisioner.enter_file = f"{km.ip}-enter"
        await km.start_kernel(cwd=str(cwd or self.cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
        kc = km.client(context=self._zmq)
        # No heartbeat channel (a thread and a socket per kernel): the client asks its manager, which polls the
        # kernel's process, whether the kernel is alive (jupyter_client does so for a client its manager made).
        kc.start_channels(hb=False)
        try:
            await kc.wait_for_ready(timeout=self.startup_timeout_s)
        except BaseException:  # cancelled too (the pool closing mid-start): no client left talking to a kernel
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        return Kernel(name=name, km=km, kc=kc)

    async def acquire(self, name: str) -> Kernel:
        """A ready kernel for `name` (from the pool when one is warm), used by the caller only.

        The pool refills when the kernel is given back (release_later), not now, while another ready kernel is
        left: a kernel's start costs the worker ~15 ms of its event loop and a core for ~30 ms, which the job that
        has just begun would wait for. A worker runs one job at a time, so the next job finds a kernel ready."""
        ready = self._ready.setdefault(name, deque())
        # A refill under way finishes sooner than a kernel started now, which would only compete with it.
        while not ready and self._filling.get(name):
            await asyncio.wait(set(self._filling[name]), return_when=asyncio.FIRST_COMPLETED)
        kernel: Kernel | None = None
        while ready:
            candidate = ready.popleft()
            if await candidate.alive():
                kernel = candidate
                break
            await candidate.shutdown()
        if kernel is None or not ready:
            self.refill(name)
        if kernel is None:
            kernel = await self.start_kernel(name)
        return kernel

    def refill(self, name: str) -> None:
        if self._closing:  # a job ending while the pool closes: no kernel is needed any more
            return
        tasks = self._filling.setdefault(name, set())
        missing = self.size - len(self._ready.get(name, ())) - len(tasks)
        for _ in range(max(0, missing)):
            task = asyncio.create_task(self._fill_one(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _fill_one(self, name: str) -> None:
        try:
            kernel = await self.start_kernel(name)
        except Exception as exc:
            log.warning("could not pre-start a %s kernel: %s", name, exc)
            return
        self._ready.setdefault(name, deque()).append(kernel)

    def release_later(self, kernel: Kernel) -> None:
        """A killed kernel's clean-up (Kernel.release), in the background (close() waits for it), and the refill
        of the pool its job left short."""
        task = asyncio.create_task(kernel.release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        self.refill(kernel.name)

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*self._releasing, return_exceptions=True)
        for tasks in self._filling.values():
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for ready in self._ready.values():
            while ready:
                await ready.popleft().shutdown()
        if self.zygote is not None:
            await asyncio.to_thread(self.zygote.close)
        self._zmq.destroy(linger=0)
