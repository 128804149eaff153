"""``evoir export`` and ``evoir import FILE.onnx``: success, refusals (exit 2, one line,
nothing written) and a mismatch with onnxruntime (exit 1, nothing written)."""

from __future__ import annotations

import re

import onnx
import pytest

from evoir import GraphBuilder
from evoir.backends.onnx import ONNX_LOWERINGS
from evoir.modelfile import load_model, save_model

from .conftest import assert_user_error
from .onnx_helpers import onnx_model, op_without_onnx_lowering


def _files(tmp_path) -> set[str]:
    return {p.name for p in tmp_path.rglob("*") if p.is_file()}


def test_export_checks_and_writes_then_imports_back(evoir_cli, tmp_path, painter_file):
    result = evoir_cli("export", str(painter_file), "-o", "p.onnx")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert re.fullmatch(r".*: \d+ IR nodes -> \d+ ONNX nodes, \d+ initializers, opset 17", lines[0])
    assert re.fullmatch(r"onnxruntime vs torch\.fx: max abs diff \S+ \(ok, tol 1e-05\)", lines[1])
    assert lines[2].startswith("wrote p.onnx (")
    onnx.checker.check_model(onnx.load(str(tmp_path / "p.onnx")), full_check=True)

    back = evoir_cli("import", "p.onnx", "-o", "back.json")
    assert back.code == 0, back.err
    graph, _ = load_model(painter_file)
    again, _ = load_model(tmp_path / "back.json")
    assert again.nodes == graph.nodes
    verify = evoir_cli("verify", str(painter_file), "back.json")
    assert verify.code == 0, verify.out


def test_export_default_name_no_check_and_opset(evoir_cli, tmp_path, painter_file):
    result = evoir_cli("export", str(painter_file), "--no-check", "--opset", "20")
    assert result.code == 0, result.err
    assert "onnxruntime" not in result.out and "opset 20" in result.out
    assert (tmp_path / "painter.onnx").exists()


def test_export_refuses_to_overwrite(evoir_cli, tmp_path, painter_file):
    target = tmp_path / "p.onnx"
    target.write_bytes(b"keep me")
    assert_user_error(evoir_cli("export", str(painter_file), "-o", "p.onnx"), "exists; pass --force")
    assert target.read_bytes() == b"keep me"
    assert evoir_cli("export", str(painter_file), "-o", "p.onnx", "--force").code == 0
    assert onnx.load(str(target)).graph.node


def test_a_mismatch_exits_1_and_writes_nothing(evoir_cli, tmp_path, painter_file, monkeypatch):
    # A wrong lowering (sigmoid for relu): the file is valid ONNX but computes something else.
    def wrong(ex, node, args):
        return ex.final("Sigmoid", args, node)

    monkeypatch.setitem(ONNX_LOWERINGS, "relu", wrong)
    before = _files(tmp_path)
    result = evoir_cli("export", str(painter_file), "-o", "p.onnx")
    assert result.code == 1
    assert "MISMATCH at output 'out'" in result.out and "tol 1e-05" in result.out
    assert "nothing written" in result.err
    assert _files(tmp_path) == before


def test_an_op_without_onnx_lowering_exits_2(evoir_cli, tmp_path):
    with op_without_onnx_lowering() as op:
        b = GraphBuilder("odd")
        graph, store = b.build(b.output(b.add(op, [b.input((3, 4, 4))], name="sq")))
        save_model(tmp_path / "odd.json", graph, store)
        result = evoir_cli("export", "odd.json", "-o", "odd.onnx")
    assert_user_error(result, "node 'sq'", f"op '{op}' has no ONNX lowering")
    assert not (tmp_path / "odd.onnx").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "none.json"], "no such file"),
        (["export", "{model}", "-o", "p.txt"], "must end in .onnx"),
        (["export", "{model}", "-o", "no/such/dir/p.onnx"], "output folder does not exist"),
        (["export", "{model}", "--opset", "16"], "16 is not in the range x>=17"),
        (["export", "{model}", "--opset", "999", "--no-check"], "opset 999 is not supported"),
        (["import", "none.onnx", "-o", "x.json"], "no such file"),
        (["import", "junk.onnx", "-o", "x.json"], "junk.onnx"),
        (["import", "elu.onnx", "-o", "x.json"], "'odd_one' (Elu)"),
        (["import", "elu.onnx", "-o", "x.json", "--input", "3,4,4"], "--input and --tokens do not apply"),
    ],
)
def test_bad_input_exits_2_with_one_line(evoir_cli, tmp_path, painter_file, args, needle):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 this is not a model")
    elu = onnx_model(
        [onnx.helper.make_node("Elu", ["x"], ["y"], name="odd_one")],
        [("x", ["N", 3, 4, 4])],
        [("y", ["N", 3, 4, 4])],
    )
    onnx.save(elu, str(tmp_path / "elu.onnx"))
    before = _files(tmp_path)
    result = evoir_cli(*[a.format(model=painter_file) for a in args])
    assert_user_error(result, needle)
    assert _files(tmp_path) == before
