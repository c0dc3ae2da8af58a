"""What `import granary_flows` promises: every name it exports can be imported, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_every_exported_name_imports():
    program = (
        "import granary_flows\n"
        "from granary_flows import *\n"
        "missing = [name for name in granary_flows.__all__ if name not in globals()]\n"
        "assert not missing, missing\n"
        "assert callable(flow_for) and callable(load_definition)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error_that_names_it():
    import granary_flows

    with pytest.raises(AttributeError, match="build_flow"):
        granary_flows.build_flow  # noqa: B018
