"""The examples in the package's docstrings are run, so that none of them goes stale."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import granary_flows

pytestmark = pytest.mark.unit
MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(granary_flows.__path__, "granary_flows."))


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_in_each_module_run(name, monkeypatch):
    from helpers import ROOT

    monkeypatch.chdir(ROOT)  # examples name files as a user in the project folder would
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert failures == 0
