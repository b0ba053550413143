"""The short chaos run (issue 7): 50 resuming subscribers, a generator,
5 frontend and 3 supervisor kill -9 at random moments.  The full run is
`make chaos` (tests/chaos/chaos.py with its defaults)."""

import importlib.util

import helpers


def load_chaos():
    path = helpers.repo_dir() / "tests" / "chaos" / "chaos.py"
    spec = importlib.util.spec_from_file_location("chaos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_chaos(capsys):
    chaos = load_chaos()
    rc = chaos.main(["--build", str(helpers.build_dir()), "--subscribers",
                     "50", "--rate", "50", "--frontend-kills", "5",
                     "--supervisor-kills", "3", "--seed", "11",
                     "--max-seconds", "240"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "lost=0 duplicated=0 refused=0" in out
