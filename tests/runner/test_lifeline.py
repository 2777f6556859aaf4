"""Kernels die with the worker process that owns them, wherever the orphans go: forked by the zygote, or
launched the usual way (other kernels, or NBRELAY_FORK_KERNELS=0).

The scenario runs in a helper process that is itself a child subreaper, as a container's init or a CI runner may
be: a dead worker's orphaned kernel is re-parented to it, not to pid 1, so ipykernel's own "parent is init" check
cannot notice. The worker (the kernel's owner) is killed with SIGKILL either at once, while the kernel is still
starting, or once the kernel is up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCENARIO = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from jupyter_client.launcher import launch_kernel
    from nbrelay.runner.kernels import Zygote, become_subreaper
    from nbrelay.runner.lifeline import child_is_kernel

    kill_at_once = sys.argv[1] == "at-once"
    forked = sys.argv[2] == "forked"
    connection_dir = sys.argv[3]
    assert become_subreaper()
    read_fd, write_fd = os.pipe()
    owner = os.fork()
    if owner == 0:  # the worker process: a subreaper with its zygote, as in executor/worker.py
        os.close(read_fd)
        become_subreaper()
        connection = os.path.join(connection_dir, "kernel.json")
        env = dict(os.environ, JPY_PARENT_PID=str(os.getpid()))
        if forked:  # as ForkProvisioner does
            args = ["-f", connection, f"--IPKernelApp.parent_handle={os.getpid()}"]
            pid = Zygote().spawn(args, connection_dir, env)
        else:  # as LocalProvisioner does, with the hook ForkProvisioner adds
            command = [sys.executable, "-m", "ipykernel_launcher", "-f", connection]
            pid = launch_kernel(command, env=env, cwd=connection_dir, preexec_fn=child_is_kernel(0)).pid
        if not kill_at_once:  # wait for the kernel to be up: it wrote its connection file
            deadline = time.monotonic() + 60
            while not os.path.exists(connection) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        os.write(write_fd, str(pid).encode())
        time.sleep(600)
        os._exit(0)
    os.close(write_fd)
    kernel = int(os.read(read_fd, 64))
    os.kill(owner, signal.SIGKILL)
    os.waitpid(owner, 0)
    deadline = time.monotonic() + 20
    gone = False
    while time.monotonic() < deadline:
        try:  # orphans come to us: reap them, and stop when the kernel was one of them
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid == kernel or not os.path.exists(f"/proc/{kernel}"):
            gone = True
            break
        time.sleep(0.05)
    if not gone:
        os.kill(kernel, signal.SIGKILL)
    print(json.dumps({"kernel": kernel, "gone": gone}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks kernels on Linux only")
@pytest.mark.parametrize("how", ["forked", "launched"])
@pytest.mark.parametrize("when", ["at-once", "when-up"])
def test_a_kernel_dies_with_its_worker_under_a_subreaper(tmp_path, how: str, when: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, when, how, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["gone"], f"{how} kernel {outcome['kernel']} outlived its worker ({when})"
