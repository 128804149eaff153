"""``evoir passes``, ``evoir mutate`` and ``evoir verify``."""

from __future__ import annotations

import json

import pytest

from evoir.modelfile import load_model

from .conftest import assert_user_error


def test_passes_lists_every_pass(evoir_cli):
    result = evoir_cli("passes")
    assert result.code == 0
    assert "widen  (preserves the function)" in result.out
    assert "random-pad  (does NOT preserve the function)" in result.out
    assert "kernel: int = 3" in result.out


def test_mutate_widen_then_verify_exits_0(evoir_cli, r20_file, tmp_path):
    result = evoir_cli("mutate", str(r20_file), "--op", "widen")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("widen{at=")
    assert lines[1].startswith("parameters: 272.47k -> ")
    assert lines[2].startswith("preserved: same function")
    child = tmp_path / "r20-widen.json"
    assert child.exists()
    graph, _ = load_model(child)
    assert list(graph.metadata["lineage"]) == [lines[0]]
    verified = evoir_cli("verify", str(r20_file), str(child))
    assert verified.code == 0
    assert verified.out.startswith("preserved")
    doc = json.loads(evoir_cli("verify", str(r20_file), str(child), "--json").out)
    assert doc["ok"] and doc["structural"]["proven"]


def test_mutate_options(evoir_cli, painter_file, tmp_path):
    result = evoir_cli(
        "mutate",
        str(painter_file),
        "--op",
        "deepen",
        "--at",
        "layer1.out",
        "--channels",
        "4",
        "--kernel",
        "5",
        "--set",
        "sigma=bn+gelu",
        "-o",
        "d.json",
    )
    assert result.code == 0, result.err
    assert result.out.startswith("deepen{at=layer1.out,channels=4,kernels=[5],sigma=bn+gelu,")


def test_mutate_random_with_tau(evoir_cli, painter_file, tmp_path):
    result = evoir_cli(
        "mutate", str(painter_file), "--op", "random", "--tau", "0.8", "--seed", "4", "-o", "r.json"
    )
    assert result.code == 0, result.err
    before, after = (
        int(x.replace(",", "")) for x in result.out.splitlines()[1].split("(")[1].rstrip(")").split(" -> ")
    )
    assert before / after > 0.8


def test_verify_detects_a_different_function(evoir_cli, painter_file, tmp_path):
    assert evoir_cli("mutate", str(painter_file), "--op", "random-pad", "-o", "rp.json").code == 0
    result = evoir_cli("verify", str(painter_file), "rp.json")
    assert result.code == 1
    assert result.out.startswith("NOT preserved") and "worst at output 'out'" in result.out


def test_verify_of_unrelated_models_is_1_and_of_bad_input_2(evoir_cli, painter_file, r20_file):
    assert evoir_cli("new", "painter-base", "--width", "8", "--seed", "1", "-o", "other.json").code == 0
    assert evoir_cli("verify", str(painter_file), "other.json").code == 1
    assert_user_error(evoir_cli("verify", str(painter_file), "missing.json"), "no such file")
    assert evoir_cli("new", "mlp", "-o", "m.json").code == 0
    assert_user_error(evoir_cli("verify", str(painter_file), "m.json"), "different inputs")


def _files(tmp_path):
    return {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--op", "widen", "--channels", "3"], "channels must be even"),
        (
            ["--op", "widen", "--set", "sigma=bn+layernorm", "--set", "init=pair"],
            "inter-channel dependencies",
        ),
        (["--op", "widen", "--at", "layer1.conv1"], "targets the add of a residual block"),
        (["--op", "widen", "--kernel", "4"], "kernel must be one of"),
        (["--op", "net2wider", "--kernel", "3"], "--kernel does not apply to net2wider"),
        (["--op", "widen", "--set", "colour=red"], "--set 'colour=red'"),
        (["--op", "widen", "--tau", "0.5"], "--tau applies to --op random only"),
        (["--op", "teleport"], "'teleport' is not one of"),
        (["--op", "random", "--at", "layer1.add"], "--op random draws its own"),
        (
            ["--op", "net2wider", "--at", "layer1.conv2", "--set", "group=false"],
            "tied by residual add 'layer1.add'",
        ),
        (["--op", "net2wider", "--at", "layer1.conv2", "--channels", "4"], "must exceed the current width"),
        (["--op", "net2deeper", "--at", "layer1.add"], "is not an activation"),
        (["--op", "net2deeper", "--at", "stem.bn"], "not an activation"),
    ],
)
def test_mutate_refusals_exit_2_and_write_nothing(evoir_cli, painter_file, tmp_path, args, needle):
    before = _files(tmp_path)
    assert_user_error(evoir_cli("mutate", str(painter_file), *args), needle)
    assert _files(tmp_path) == before


def test_mutate_never_overwrites_without_force(evoir_cli, painter_file, tmp_path):
    assert evoir_cli("mutate", str(painter_file), "--op", "widen").code == 0
    target = tmp_path / "painter-widen.json"
    original = target.read_bytes()
    assert_user_error(
        evoir_cli("mutate", str(painter_file), "--op", "widen", "--seed", "2"), "exists; pass --force"
    )
    assert target.read_bytes() == original
    assert evoir_cli("mutate", str(painter_file), "--op", "widen", "--seed", "2", "--force").code == 0


def test_mutate_net2_passes(evoir_cli, r20_file, tmp_path):
    result = evoir_cli(
        "mutate", str(r20_file), "--op", "net2wider", "--at", "stage1.block1.2.conv", "--channels", "20"
    )
    assert result.code == 0, result.err
    assert "preserved: same function (eval/train)" in result.out
    graph, _ = load_model(tmp_path / "r20-net2wider.json")
    assert graph.node("stem.conv").type.channels == 20  # the tied group widened together
    result = evoir_cli("mutate", str(r20_file), "--op", "net2deeper", "--at", "stage2.block1.out")
    assert result.code == 0, result.err
    assert "preserved: same function (eval)" in result.out  # BN: eval mode only
    verified = evoir_cli("verify", str(r20_file), "r20-net2deeper.json")  # the lineage says: eval only
    assert verified.code == 0 and "checking eval mode only" in verified.out
    assert evoir_cli("verify", str(r20_file), "r20-net2deeper.json", "--eval-only").code == 0


def test_fuse_command(evoir_cli, painter_file, tmp_path):
    assert (
        evoir_cli("mutate", str(painter_file), "--op", "widen", "--at", "layer1.add", "-o", "w.json").code
        == 0
    )
    explained = evoir_cli("fuse", "w.json", "--explain")
    assert explained.code == 0 and "fuse at layer1.add: 2 conv_b" in explained.out
    assert not (tmp_path / "w-fused.json").exists()
    result = evoir_cli("fuse", "w.json")
    assert result.code == 0, result.err
    assert "same function" in result.out and (tmp_path / "w-fused.json").exists()
    assert evoir_cli("verify", "w.json", "w-fused.json").code == 0
    assert_user_error(evoir_cli("fuse", "w.json"), "exists; pass --force")


def test_fuse_pad_limit(evoir_cli, painter_file):
    # A 1×1 and a 5×5 zero block beside F's 3×3: padding all to 5×5 more than doubles the MACs.
    for kernel, out in ((1, "w1.json"), (5, "w5.json")):
        src = "w1.json" if kernel == 5 else str(painter_file)
        line = ["--op", "widen", "--at", "layer1.add", "--kernel", str(kernel), "-o", out]
        assert evoir_cli("mutate", src, *line).code == 0
    grouped = evoir_cli("fuse", "w5.json", "--explain")
    assert grouped.code == 0 and "nothing to fuse" in grouped.out and "padding it would add" in grouped.out
    padded = evoir_cli("fuse", "w5.json", "--explain", "--pad-limit", "inf")
    assert padded.code == 0 and "fuse at layer1.add: 3 conv_b" in padded.out
    assert_user_error(evoir_cli("fuse", "w5.json", "--pad-limit", "-1"), "--pad-limit")
