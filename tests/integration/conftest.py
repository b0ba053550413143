"""pytest fixtures shared by every integration test.

    mkhost(n=50, seed=1) -> Path   a fresh host tree under tmp_path
    daemon(root, *extra, events_file=False, ...) -> Daemon
                                   a started vminfod, stopped (and checked
                                   for a clean exit) at teardown
    build, repo                    build_dir() / repo_dir() as fixtures

The helpers themselves live in helpers.py (import them from tests).
"""

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402


@pytest.fixture
def build():
    """The build directory holding vminfod and friends."""
    return helpers.build_dir()


@pytest.fixture
def repo():
    """The repository root."""
    return helpers.repo_dir()


@pytest.fixture
def mkhost(tmp_path):
    """Factory: mkhost(n=50, seed=1) generates a new host tree per call.

    Each call gets its own directory under this test's tmp_path; nothing
    is cached between tests."""
    counter = itertools.count()

    def make(n=50, seed=1):
        root = tmp_path / ("host%d" % next(counter))
        return helpers.run_mkhost(root, n, seed)
    return make


@pytest.fixture
def daemon(tmp_path):
    """Factory: daemon(root, *extra, **kw) starts vminfod and waits for it.

    Keyword arguments go to helpers.Daemon (events_file, port, env,
    ready_timeout, binary).  Every daemon still running at teardown gets
    SIGTERM and must exit 0, so a crash or hang fails the test."""
    started = []
    counter = itertools.count()

    def start(root, *extra, **kw):
        work = tmp_path / ("daemon%d" % next(counter))
        d = helpers.Daemon(root, work, extra=extra, **kw)
        started.append(d)
        return d.start()
    yield start
    errors = []
    for d in started:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
