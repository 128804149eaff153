"""The IR's value semantics and ``Graph.validate``'s refusals."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from evoir import Graph, GraphBuilder, GraphError, StoreError, TensorStore, make_node
from evoir.templates import resnet


def tiny():
    b = GraphBuilder("tiny")
    x = b.input((3, 8, 8))
    h = b.relu(b.batchnorm2d(b.conv2d(x, 4, kernel=3, padding=1, name="c1"), name="bn1"), name="r1")
    h = b.add("flatten", [h], "flat")
    return b.build(b.output(b.linear(h, 5, name="fc")))


def doc_of(graph: Graph) -> dict:
    return json.loads(graph.model_dump_json())


def revalidate(doc: dict, store=None) -> Graph:
    return Graph.model_validate(doc).validate(store)


def test_json_round_trip_is_identity():
    graph, _ = resnet(depth=20)
    again = Graph.model_validate_json(graph.model_dump_json())
    assert again == graph
    assert again.validate() == graph
    assert doc_of(graph)["schema_version"] == 1


def test_values_are_immutable():
    graph, _ = tiny()
    with pytest.raises(ValidationError, match="frozen"):
        graph.name = "other"
    with pytest.raises(TypeError, match="immutable"):
        graph.node("c1").attrs["out_channels"] = 9
    with pytest.raises(TypeError):
        graph.node("c1").params["weight"] = "x"


def test_unknown_keys_are_rejected():
    graph, _ = tiny()
    doc = doc_of(graph)
    doc["nodes"][1]["colour"] = "red"
    with pytest.raises(ValidationError, match="colour"):
        Graph.model_validate(doc)


def test_types_are_inferred():
    graph, _ = tiny()
    assert graph.node("c1").type.shape == (4, 8, 8)
    assert graph.node("flat").type.shape == (256,)
    assert graph.node("fc").type.shape == (5,)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["nodes"][1].update(op="conv3d"), "unknown op 'conv3d'"),
        (lambda d: d["nodes"][1]["attrs"].update(out_channels=-1), "bad attribute 'out_channels'"),
        (lambda d: d["nodes"][1]["attrs"].update(kernel=[3, 3, 3]), "bad attribute 'kernel'"),
        (lambda d: d["nodes"][2].update(inputs=["ghost"]), "dangling"),
        (lambda d: d["nodes"][1].update(inputs=["bn1"]), "cycle"),
        (lambda d: d["nodes"][1]["type"].update(shape=[5, 8, 8]), "declared type"),
        (lambda d: d["nodes"][1]["params"].pop("bias"), "owns tensors"),
        (lambda d: d["nodes"][2].update(id="c1"), "duplicate node id"),
        (lambda d: d["nodes"][5].update(inputs=["r1"]), "linear needs a feature vector"),
    ],
)
def test_validate_rejects_and_names_the_node(mutate, message):
    graph, _ = tiny()
    doc = doc_of(graph)
    mutate(doc)
    with pytest.raises(GraphError, match=message) as info:
        revalidate(doc)
    assert info.value.node is not None
    assert f"node '{info.value.node}'" in str(info.value)


def test_out_of_order_nodes_are_rejected_without_a_cycle():
    graph, _ = tiny()
    doc = doc_of(graph)
    doc["nodes"][1], doc["nodes"][2] = doc["nodes"][2], doc["nodes"][1]
    with pytest.raises(GraphError, match="topological order"):
        revalidate(doc)


def test_channel_mismatch_at_add_is_rejected():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    a = b.conv2d(x, 4, kernel=1)
    c = b.conv2d(x, 6, kernel=1)
    with pytest.raises(GraphError, match="add input 1 has shape"):
        make_node("sum", "add", [a, c])


def test_error_context_shows_the_neighbourhood():
    graph, _ = tiny()
    doc = doc_of(graph)
    doc["nodes"][3]["type"]["shape"] = [4, 9, 9]
    with pytest.raises(GraphError) as info:
        revalidate(doc)
    explained = info.value.explain()
    assert ">> r1: f32[4,9,9] = relu(bn1)" in explained
    assert "     bn1:" in explained and "     flat:" in explained


def test_store_checks_parameter_shapes():
    graph, store = tiny()
    graph.validate(store)
    wrong = TensorStore({k: v for k, v in store.items() if k != "c1.weight"})
    with pytest.raises(StoreError, match="not in the store"):
        graph.validate(wrong)
    wrong.add("c1.weight", torch.zeros(4, 3, 5, 5))
    with pytest.raises(StoreError, match=r"has shape \[4, 3, 5, 5\], conv2d needs \[4, 3, 3, 3\]"):
        graph.validate(wrong)


def test_graph_needs_inputs_and_outputs():
    graph, _ = tiny()
    with pytest.raises(GraphError, match="no output node"):
        graph.with_nodes(graph.nodes[:-1]).validate()


def test_users_and_networkx_view():
    graph, _ = tiny()
    assert graph.users()["c1"] == ["bn1"]
    g = graph.to_networkx()
    assert g.number_of_nodes() == len(graph)
    assert ("flat", "fc") in g.edges
