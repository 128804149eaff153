"""Shared fixtures: small models on disk and a CLI runner that goes through ``main``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the hand-written reference networks live in bench/
    sys.path.insert(0, str(ROOT))

from evoir.cli.main import main  # noqa: E402
from evoir.modelfile import save_model  # noqa: E402
from evoir.templates import painter_base, resnet  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test keeps what evoir caches (a streamed folder's normalisation) in its own folder,
    never in the user's ~/.cache, and subprocesses inherit it."""
    monkeypatch.setenv("EVOIR_CACHE", str(tmp_path_factory.mktemp("evoir-cache")))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "no_auto_verify: skip the per-pass function check (the test verifies itself)"
    )
    config.addinivalue_line("markers", "slow: minutes of work; not in the default run (pytest -m slow)")


@pytest.fixture(autouse=True)
def check_function_after_every_preserving_pass(request):
    """Like TVM's well-formedness fixture: in every test, every pass application whose result
    is modified and whose pass declares it preserves the function is verified numerically
    (float64 and float32, eval mode and, where the pass claims ``Preserves.EVAL_AND_TRAIN``,
    train mode) and must leave every parent tensor bit-identical. It is an instrument of the
    pass runner, so it sees every application: passes called by passes and by the search's
    mutations too."""
    if request.node.get_closest_marker("no_auto_verify"):
        yield
        return
    from evoir.backends.verify import verify_result
    from evoir.passes.runner import instrument

    def check(pass_, graph, store, snapshot, result):
        if result.modified and result.applied.preserves.in_eval:
            verification = verify_result(graph, result, store, snapshot=snapshot, samples=2)
            assert verification.ok, f"{result.applied.line()} broke the function: {verification.summary()}"
            VERIFIED.append(result.applied.line())

    with instrument(check):
        yield


VERIFIED: list[str] = []
"""Pass lines the autouse fixture verified (tests can assert the fixture really ran)."""


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def evoir_cli(capsys, monkeypatch, tmp_path):
    """Run ``evoir ARGS`` in-process (through the real entry point) inside ``tmp_path``."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def r20_file(tmp_path) -> Path:
    graph, store = resnet(depth=20)
    return save_model(tmp_path / "r20.json", graph, store)


@pytest.fixture
def painter_file(tmp_path) -> Path:
    graph, store = painter_base(width=8)
    return save_model(tmp_path / "painter.json", graph, store)


def assert_user_error(result: Result, *needles: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("evoir: error: ")
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
