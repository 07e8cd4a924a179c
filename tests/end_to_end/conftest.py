"""The end-to-end tests' shared run: the quick demo, once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The whole factory on the toy domain, reduced (``prmfactory demo --quick``): (folder, report).

    The one end-to-end run that trains the toy PRM; tests that need a finished run or its PRM read it,
    and may only add what a rerun would (a rerun of the demo, an evaluation beside it)."""
    from prmfactory.demo import SIZES, run_demo

    output = tmp_path_factory.mktemp("quick-demo") / "demo"
    return output, run_demo(output, SIZES["quick"], quiet=True)
