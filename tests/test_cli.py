"""The ``evoir`` command line: behaviour, and one-line exit-2 errors for every user mistake."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from evoir.cli.main import cli
from evoir.modelfile import load_model, weights_path

from .conftest import assert_user_error

COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(evoir_cli, command):
    result = evoir_cli(command, "--help")
    assert result.code == 0
    assert "Example" in result.out and f"evoir {command}" in result.out


def test_new_resnet20_and_show_json(evoir_cli, tmp_path):
    result = evoir_cli("new", "resnet", "--depth", "20", "-o", "r20.json")
    assert result.code == 0, result.err
    assert "wrote r20.json" in result.out
    shown = evoir_cli("show", "r20.json", "--json")
    doc = json.loads(shown.out)
    assert 0.26e6 < doc["params"] < 0.28e6
    assert 40e6 < doc["macs"] < 42e6
    assert doc["flops"] == 2 * doc["macs"]
    assert doc["outputs"] == [[10]]
    assert len(doc["per_node"]) == doc["nodes"] == 75


@pytest.mark.parametrize(
    "args, shape",
    [
        (["painter-base", "--width", "8"], [3, 32, 32]),
        (["mlp", "--classes", "3"], [1, 28, 28]),
        (
            ["era", "--block", "bottleneck", "--blocks", "0,1,1,1", "--filters", "8", "--group-size", "4"],
            [3, 32, 32],
        ),
        (["resnet", "--input", "3,16,16", "--width", "4"], [3, 16, 16]),
    ],
)
def test_new_templates(evoir_cli, tmp_path, args, shape):
    result = evoir_cli("new", *args, "-o", "m.json")
    assert result.code == 0, result.err
    graph, _ = load_model(tmp_path / "m.json")
    assert list(graph.input_nodes[0].type.shape) == shape


def test_show_table(evoir_cli, r20_file):
    result = evoir_cli("show", str(r20_file))
    assert result.code == 0
    assert "stage3.block3.add" in result.out
    assert "272,474 parameters" in result.out


def test_validate_and_run(evoir_cli, painter_file):
    assert "valid" in evoir_cli("validate", str(painter_file)).out
    result = evoir_cli("run", str(painter_file), "--input-random", "--batch", "3")
    assert result.code == 0
    assert "out: shape [3, 10]" in result.out
    assert (
        "out: shape [3, 10]"
        in evoir_cli("run", str(painter_file), "--input-random", "--train", "--batch", "3").out
    )


@pytest.mark.parametrize("suffix", [".svg", ".png", ".dot"])
def test_draw(evoir_cli, painter_file, tmp_path, suffix):
    out = tmp_path / f"g{suffix}"
    result = evoir_cli("draw", str(painter_file), "-o", str(out))
    assert result.code == 0, result.err
    data = out.read_bytes()
    marker = {".svg": b"<svg", ".png": b"\x89PNG", ".dot": b"digraph"}[suffix]
    assert marker in data[:400]
    if suffix == ".dot":
        assert b'"layer1.conv2" -> "layer1.add"' in data


def test_import_torchvision_resnet18(evoir_cli, tmp_path):
    result = evoir_cli("import", "torchvision.models:resnet18", "--input", "3,64,64", "-o", "r18.json")
    assert result.code == 0, result.err
    graph, store = load_model(tmp_path / "r18.json")
    assert graph.node("layer4.1.conv2").type.shape == (512, 2, 2)


def test_import_from_a_file(evoir_cli, tmp_path):
    (tmp_path / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))\n"
    )
    result = evoir_cli("import", "nets.py:small", "--input", "3,8,8", "-o", "s.json")
    assert result.code == 0, result.err
    assert (tmp_path / "s.safetensors").exists()


# ---- user mistakes: one line on stderr, exit 2, nothing written ------------------------------


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.rglob("*") if p.is_file()}


def _break(tmp_path: Path, r20_file: Path, how: str) -> Path:
    doc = json.loads(r20_file.read_text())
    if how == "missing":
        return tmp_path / "nothing.json"
    if how == "malformed":
        r20_file.write_text('{"nodes": [')
    elif how == "schema":
        doc["nodes"][1]["kernel_size"] = 3
        r20_file.write_text(json.dumps(doc))
    elif how == "cycle":
        doc["nodes"][1]["inputs"] = ["stem.relu"]
        r20_file.write_text(json.dumps(doc))
    elif how == "shape":
        doc["nodes"][1]["attrs"]["out_channels"] = 17
        doc["nodes"][1]["type"]["shape"][0] = 17
        r20_file.write_text(json.dumps(doc))
    elif how == "no-weights":
        weights_path(r20_file).unlink()
    elif how == "wrong-weights":
        tensors = load_file(str(weights_path(r20_file)))
        tensors["fc.weight"] = tensors["fc.weight"][:, :3].contiguous()
        save_file(tensors, str(weights_path(r20_file)))
        doc["metadata"]["weights"].pop("sha256")
        r20_file.write_text(json.dumps(doc))
    elif how == "directory":
        return tmp_path
    return r20_file


BROKEN = {
    "missing": "no such file",
    "malformed": "malformed JSON",
    "schema": "schema violation",
    "cycle": "cycle",
    "shape": "stem.bn",
    "no-weights": "weights file r20.safetensors is missing",
    "wrong-weights": "fc.weight",
    "directory": "is a directory",
}


@pytest.mark.parametrize("how", sorted(BROKEN))
@pytest.mark.parametrize("command", ["show", "validate", "run", "draw"])
def test_bad_model_files_exit_2_with_one_line(evoir_cli, tmp_path, r20_file, how, command):
    path = _break(tmp_path, r20_file, how)
    before = _files(tmp_path)
    extra = {"run": ["--input-random"], "draw": ["-o", str(tmp_path / "g.svg")]}.get(command, [])
    result = evoir_cli(command, str(path), *extra)
    assert_user_error(result, BROKEN[how])
    assert _files(tmp_path) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["new", "resnet", "--depth", "21", "-o", "x.json"], "6n+2"),
        (["new", "painter-base", "--depth", "20", "-o", "x.json"], "--depth applies to resnet"),
        (["new", "vgg", "-o", "x.json"], "'vgg' is not one of"),
        (["new", "resnet", "--input", "3,a,3", "-o", "x.json"], "not a shape"),
        (["new", "resnet", "--input", "3", "-o", "x.json"], "needs a (C,H,W) input"),
        (["new", "era", "--blocks", "0,0,1,1", "-o", "x.json"], "section 2"),
        (["new", "resnet", "-o", "x.txt"], "must end in .json"),
        (["new", "resnet", "-o", "no/such/dir/x.json"], "output folder does not exist"),
        (["import", "torchvision.models", "-o", "x.json"], "expected MODULE:ATTR"),
        (["import", "no_such_module_xyz:thing", "-o", "x.json"], "cannot import"),
        (["import", "torch.nn:LayerNorm", "-o", "x.json"], "LayerNorm"),
        (["run", "x.json"], "--input-random"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(evoir_cli, tmp_path, args, needle):
    before = _files(tmp_path)
    result = evoir_cli(*args)
    assert_user_error(result, needle)
    assert _files(tmp_path) == before


def test_unsupported_import_names_the_node(evoir_cli, tmp_path):
    (tmp_path / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def ln():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 6, 6]))\n"
    )
    result = evoir_cli("import", "nets.py:ln", "--input", "3,8,8", "-o", "x.json")
    assert_user_error(result, "aten.layer_norm.default", "LayerNorm")
    assert not (tmp_path / "x.json").exists()


def test_a_module_of_the_current_directory_imports_from_the_console_script(tmp_path):
    """The ``evoir`` script's ``sys.path`` lacks the current directory (``python -m`` has it):
    ``mynets:Net`` must still find ``./mynets.py``, for ``import`` and ``--dataset`` alike."""
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))\n"
    )
    as_the_script = "import sys; sys.path.pop(0); from evoir.cli.main import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", as_the_script, "import", "mynets:Net", "--input", "3,8,8", "-o", "n.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "n.json").exists()


def test_existing_output_is_not_overwritten(evoir_cli, tmp_path, r20_file):
    original = r20_file.read_bytes()
    result = evoir_cli("new", "painter-base", "-o", str(r20_file))
    assert_user_error(result, "exists; pass --force")
    assert r20_file.read_bytes() == original
    assert evoir_cli("new", "painter-base", "-o", str(r20_file), "--force").code == 0
    assert r20_file.read_bytes() != original


def test_draw_refuses_unknown_format(evoir_cli, painter_file, tmp_path):
    assert_user_error(
        evoir_cli("draw", str(painter_file), "-o", str(tmp_path / "g.gif")), "unknown picture format"
    )


@pytest.mark.skipif(shutil.which("evoir") is None, reason="console script not installed")
def test_installed_console_script(tmp_path):
    ok = subprocess.run(
        ["evoir", "new", "mlp", "-o", str(tmp_path / "m.json")], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "wrote" in ok.stdout
    bad = subprocess.run(["evoir", "show", str(tmp_path / "none.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such file" in bad.stderr


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "evoir.cli.main", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "evoir" in result.stdout
