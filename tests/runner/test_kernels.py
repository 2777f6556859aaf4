"""The kernel pool's own costs: what each started kernel adds to the worker process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nbrelay.runner.kernels import Kernel, KernelPool


def _threads() -> int:
    """Threads of this process, native ones too (ZeroMQ's I/O threads are not Python threads)."""
    return len(os.listdir("/proc/self/task"))


async def test_more_kernels_add_no_threads_to_the_worker(tmp_path: Path) -> None:
    pool = KernelPool(size=0, cwd=tmp_path, startup_timeout_s=60)
    kernels: list[Kernel] = []
    try:
        kernels.append(await pool.start_kernel("python3"))
        with_one = _threads()
        for _ in range(3):
            kernels.append(await pool.start_kernel("python3"))
        # One ZeroMQ context for the pool and no heartbeat channel: jupyter_client's defaults add three threads
        # per kernel (two contexts' I/O threads and the heartbeat's).
        assert _threads() == with_one
        for kernel in kernels:
            reply = await kernel.kc.execute_interactive("x = 1", timeout=30)
            assert reply["content"]["status"] == "ok"
            assert await kernel.kc.is_alive()
    finally:
        for kernel in kernels:
            await kernel.shutdown()
        await pool.close()


async def _filled(pool: KernelPool, name: str) -> None:
    pool.refill(name)
    while pool._filling.get(name):
        await asyncio.wait(set(pool._filling[name]))


async def test_the_pool_refills_when_a_job_gives_its_kernel_back_while_another_is_ready(tmp_path: Path) -> None:
    pool = KernelPool(size=2, cwd=tmp_path, startup_timeout_s=60)
    try:
        await _filled(pool, "python3")
        first = await pool.acquire("python3")
        # One kernel is still ready for the next job: nothing starts beside the job that has just begun.
        assert not pool._filling.get("python3") and len(pool._ready["python3"]) == 1
        await first.kill()
        pool.release_later(first)
        assert len(pool._filling["python3"]) == 1
        await _filled(pool, "python3")
        second = await pool.acquire("python3")
        third = await pool.acquire("python3")
        # That took the last ready kernel: the refill starts at once.
        assert len(pool._filling["python3"]) == 2 and not pool._ready["python3"]
        for kernel in (second, third):
            await kernel.shutdown()
    finally:
        await pool.close()


async def test_a_closed_pool_starts_no_kernel(tmp_path: Path) -> None:
    pool = KernelPool(size=2, cwd=tmp_path, startup_timeout_s=60)
    await pool.close()
    pool.refill("python3")  # a job ending while its worker stops
    assert not pool._filling.get("python3")
