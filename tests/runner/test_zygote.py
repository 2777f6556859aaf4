"""Kernels forked by the zygote: they start from its preloaded, frozen heap and still collect their own garbage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nbrelay.runner.kernels import Kernel, KernelPool
from nbrelay.runner.zygote import _KERNEL_START_MODULES


async def _value(kernel: Kernel, code: str) -> object:
    """What `code` prints (one JSON value) in the kernel."""
    printed: list[str] = []

    def output(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])

    reply = await kernel.kc.execute_interactive(code, timeout=30, output_hook=output)
    assert reply["content"]["status"] == "ok", reply["content"]
    return json.loads("".join(printed))


async def test_a_forked_kernel_shares_the_frozen_preload_and_collects_its_own_cycles(tmp_path: Path) -> None:
    pool = KernelPool(size=0, cwd=tmp_path, startup_timeout_s=60)
    assert pool.zygote is not None, "this machine cannot fork kernels (no child subreaper)"
    kernel = await pool.start_kernel("python3")
    try:
        state = await _value(
            kernel,
            "import gc, json, sys\n"
            f"print(json.dumps({{'frozen': gc.get_freeze_count(), 'loaded': [m for m in {list(_KERNEL_START_MODULES)!r}"
            " if m in sys.modules]}))",
        )
        assert isinstance(state, dict)
        assert state["frozen"] > 10_000  # the zygote's whole preload: ipykernel, IPython and what they import
        assert state["loaded"] == list(_KERNEL_START_MODULES)
        collected = await _value(
            kernel,
            "class Node:\n    pass\na, b = Node(), Node()\na.other, b.other = b, a\ndel a, b\nprint(gc.collect())",
        )
        assert isinstance(collected, int) and collected >= 2  # the kernel's own objects are not frozen
    finally:
        await kernel.shutdown()
        await pool.close()


def test_the_preload_compiles_what_a_kernels_first_cell_would() -> None:
    probe = (
        "import json, tokenize\n"
        "from nbrelay.runner.zygote import _preload\n"
        "before = tokenize._compile.cache_info().currsize\n"
        "_preload()\n"
        "print(json.dumps([before, tokenize._compile.cache_info().currsize]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    before, after = json.loads(done.stdout)
    assert before == 0 and after >= 1  # the tokenizer's expressions, which IPython's input transforms use
