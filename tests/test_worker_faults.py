"""A node lost mid-run: its candidate is trained again on the other node, the search ends
with every candidate, and the events record the retry (two Ray nodes on this machine)."""

from __future__ import annotations

import json

import pytest
import ray
from ray.cluster_utils import Cluster

from evoir.search.data import load_dataset
from evoir.search.workers.ray_pool import RayPool

from .test_strategies import _fresh


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.no_auto_verify
def test_a_lost_node_s_candidate_is_retried_elsewhere(tmp_path, cluster):
    cluster, worker = cluster
    data = load_dataset("synthetic", seed=3)
    search = _fresh("regularized", tmp_path / "run", 8, data)
    search.config = search.config.model_copy(update={"steps": 60})  # long enough to be caught running
    search.pool = RayPool(data)
    assert search.pool.slots == 2
    head = cluster.head_node.node_id[:12]
    removed = []

    def on_generation(record):
        # When the head node's result comes in, the other candidate may still be training on
        # the worker node: take that node away then, and only if its task has not finished
        # (a result already made would not need training again).
        newest = search.members[-1]
        running = list(search.pool.running)
        if not removed and newest.worker["node"] == head and search.pending and len(running) == 1:
            _, unfinished = ray.wait(running, timeout=0)
            if not unfinished:
                return
            cluster.remove_node(worker)
            removed.append(search.pending[0].member.id)

    search.progress.on_generation = on_generation
    search.run()
    assert removed, "no moment with a candidate running on the worker node"
    cfg = search.config
    assert search.generation == cfg.generations and search.loop.accepted == cfg.population + cfg.generations
    log = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    retried = [e for e in log if e["id"] == removed[0]]
    assert retried and all(e["retries"] for e in retried)
    assert retried[0]["worker"]["node"] == head  # trained again on the node that is left
    assert "Error" in retried[0]["retries"][0]["error"]
