"""Neuroevolution with shared parameters (Painter's report §4, Algorithms 1–4).

    model_set = {h_i};  joint_train(model_set, N_i)
    for each generation:
        model_set = select(model_set, K)          # Algorithm 2 (top-K or co-evolution)
        model_set = mutate(model_set, M)          # Algorithm 3 (random preserving passes)
        joint_train(model_set, N_j)               # Algorithm 4 (a random member per step)
    return select(model_set, K)

Every member is a graph over ONE ``TensorStore``: a child shares every tensor of its parent
(the same objects) and only its new blocks add tensors; tensors that no member references any
more are freed after selection, with their optimiser moments. Each mutation rescales the
child's learning rate and weight decay by |θ_parent| / |θ_child| (App. C.3).

The state is checkpointed atomically after the initial training and after every generation;
a resumed run continues from the last checkpoint and, on the CPU, ends with exactly the
members and accuracies of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from evoir.analysis import analyze
from evoir.backends.torch_fx import lower
from evoir.graph import Graph
from evoir.modelfile import atomic_write_text, save_model
from evoir.passes.lr_rule import rescale_hyperparameters
from evoir.passes.random_mutation import random_mutation
from evoir.store import TensorStore

from . import checkpoint
from .batches import BatchStream
from .config import SearchConfig
from .data import DataSet
from .evaluate import Evaluation, evaluate
from .optim import SharedAdam
from .selection import coverage, select


@dataclass
class Member:
    """One network of the population: a graph over the shared store, and its own
    hyperparameters (rescaled at each mutation)."""

    id: str
    graph: Graph
    parent: str | None
    passes: list[str]
    lr: float
    weight_decay: float
    born: int
    val_acc: float | None = None
    steps: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["graph"] = json.loads(self.graph.model_dump_json())
        return d

    @classmethod
    def from_json(cls, d: dict) -> Member:
        return cls(**{**d, "graph": Graph.model_validate(d["graph"])})


@dataclass
class Progress:
    """What the engine reports to its caller (the CLI draws bars and prints lines)."""

    on_step: Callable[[int], None] = lambda n: None
    on_generation: Callable[[dict], None] = lambda record: None


@dataclass
class NESearch:
    config: SearchConfig
    data: DataSet
    folder: Path
    store: TensorStore = field(default_factory=TensorStore)
    members: list[Member] = field(default_factory=list)
    generation: int = -1  # completed generations; -1 before the initial training
    history: list[dict] = field(default_factory=list)
    correct: dict[str, torch.Tensor] = field(default_factory=dict)
    flops_train: int = 0
    flops_eval: int = 0
    elapsed_s: float = 0.0
    events_written: int = 0

    def __post_init__(self):
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.rng = random.Random(cfg.seed)
        self.joint_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.stream = BatchStream(
            self.data, self.data.train, cfg.batch_size, cfg.seed + 2, cfg.augment, self.device
        )
        self.optimizer = SharedAdam()
        self.modules: dict[str, torch.nn.Module] = {}
        self.progress = Progress()
        self._started = time.monotonic()

    # ---- setup -------------------------------------------------------------------------------
    def start(self, graph: Graph, store: TensorStore) -> None:
        """Adopt the initial network h_i."""
        self.store = store.to(self.device)
        self.members = [Member("h0", graph, None, [], self.config.lr, self.config.weight_decay, born=0)]

    def module(self, member: Member) -> torch.nn.Module:
        if member.id not in self.modules:
            self.modules[member.id] = lower(member.graph, self.store)
        return self.modules[member.id]

    # ---- Algorithm 4 ---------------------------------------------------------------------------
    def joint_train(self, steps: int) -> None:
        """Each step picks a member uniformly at random and takes one Adam step on it."""
        cfg = self.config
        cost = {m.id: 3 * analyze(m.graph).flops * cfg.batch_size for m in self.members}  # fwd + bwd ≈ 3 fwd
        params = {m.id: {tid: self.store[tid] for tid in m.graph.parameter_ids()} for m in self.members}
        for _ in range(steps):
            member = self.members[int(torch.randint(len(self.members), (1,), generator=self.joint_rng))]
            module = self.module(member).train()
            x, y = self.stream.next()
            loss = F.cross_entropy(module(x), y)
            loss.backward()
            self.optimizer.step(params[member.id], member.lr, member.weight_decay)
            for p in params[member.id].values():
                p.grad = None
            member.steps += 1
            self.flops_train += cost[member.id]
            self.progress.on_step(1)

    def evaluate_members(self) -> None:
        n = len(self.data.val)
        for m in self.members:
            ev = evaluate(self.module(m), self.data, self.data.val, self.device, self.config.eval_batch_size)
            self.correct[m.id] = ev.correct
            m.val_acc = ev.accuracy
            self.flops_eval += analyze(m.graph).flops * n

    # ---- Algorithm 2 ---------------------------------------------------------------------------
    def select(self, k: int) -> list[Member]:
        decay = self.config.coevolution_decay if self.config.selection == "coevolution" else None
        ids = select({m.id: self.correct[m.id] for m in self.members}, k, decay)
        by_id = {m.id: m for m in self.members}
        return [by_id[i] for i in ids]

    def keep_only(self, kept: list[Member]) -> list[str]:
        """Drop the other members, then every tensor (and its moments) no member uses."""
        self.members = kept
        alive = {m.id for m in kept}
        self.modules = {k: v for k, v in self.modules.items() if k in alive}
        self.correct = {k: v for k, v in self.correct.items() if k in alive}
        needed = {tid for m in kept for tid in m.graph.tensor_ids()}
        freed = self.store.retain(needed)
        self.optimizer.retain(self.store)
        return freed

    # ---- Algorithm 3 ---------------------------------------------------------------------------
    def mutate(self, size: int, generation: int) -> None:
        """Add children of randomly chosen members until there are ``size`` members."""
        k = 0
        while len(self.members) < size:
            parent = self.rng.choice(self.members)
            result = random_mutation(
                parent.graph, self.store, self.rng, tau=self.config.tau, ops=self.config.ops
            )
            added = TensorStore()
            for tid, t in result.added.items():
                added.add(tid, t.detach().to(self.device), buffer=not result.added.is_parameter(tid))
            self.store.update(added)
            before, after = analyze(parent.graph).params, analyze(result.graph).params
            lr, wd = rescale_hyperparameters(parent.lr, parent.weight_decay, before, after)
            k += 1
            child = Member(
                f"g{generation}m{k}",
                result.graph,
                parent.id,
                [result.applied.line()],
                lr,
                wd,
                born=generation,
            )
            self.members.append(child)

    # ---- Algorithm 1 ---------------------------------------------------------------------------
    def run(self) -> None:
        """Run (or continue) until all generations are done or the budget is spent."""
        cfg = self.config
        if self.generation < 0:
            self.joint_train(cfg.initial_steps)
            self.evaluate_members()
            self.generation = 0
            # The base network h_i as trained for N_i steps, before its tensors are shared
            # with (and trained further through) its descendants.
            save_model(self.folder / "base.json", self.members[0].graph, self.store)
            self.finish_generation(selected=[m.id for m in self.members])
        while self.generation < cfg.generations and not self.out_of_budget():
            g = self.generation + 1
            torch.manual_seed(cfg.seed * 1000 + g)  # any op using the global RNG replays on resume
            kept = self.select(cfg.keep)
            self.keep_only(kept)
            self.mutate(cfg.population, g)
            self.joint_train(cfg.steps)
            self.evaluate_members()
            self.generation = g
            self.finish_generation(selected=[m.id for m in kept])

    def out_of_budget(self) -> bool:
        return self.config.budget_s is not None and self.total_elapsed() >= self.config.budget_s

    def total_elapsed(self) -> float:
        return self.elapsed_s + (time.monotonic() - self._started)

    def finish_generation(self, selected: list[str]) -> None:
        """Log events and history, then checkpoint (events first: a kill between the two only
        leaves events the resumed run truncates)."""
        g = self.generation
        best = max(self.members, key=lambda m: m.val_acc or 0)
        member_bytes = sum(self.store.nbytes(m.graph.tensor_ids()) for m in self.members)
        record = {
            "generation": g,
            "members": len(self.members),
            "best_val_acc": best.val_acc,
            "best": best.id,
            "mean_val_acc": sum(m.val_acc or 0 for m in self.members) / len(self.members),
            "coverage": coverage(self.correct, [m.id for m in self.members]),
            "flops_train": self.flops_train,
            "flops_eval": self.flops_eval,
            "store_bytes": self.store.nbytes(),
            "independent_bytes": member_bytes,
            "params_best": analyze(best.graph).params,
            "elapsed_s": round(self.total_elapsed(), 2),
            "parents_selected": selected,
        }
        self.history.append(record)
        lines = []
        for m in self.members:
            a = analyze(m.graph)
            lines.append(
                json.dumps(
                    {
                        "generation": g,
                        "id": m.id,
                        "parent": m.parent,
                        "passes": m.passes,
                        "params": a.params,
                        "flops": a.flops,
                        "val_acc": m.val_acc,
                        "lr": m.lr,
                        "weight_decay": m.weight_decay,
                        "steps": m.steps,
                    }
                )
            )
        with open(self.folder / "events.jsonl", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        self.events_written += len(lines)
        self.save_checkpoint()
        self.progress.on_generation(record)

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        buffers = []
        for tid in self.store:
            tensors[f"store/{tid}"] = self.store[tid]
            if not self.store.is_parameter(tid):
                buffers.append(tid)
        for name, value in self.optimizer.state_tensors().items():
            tensors[f"adam/{name}"] = value
        for mid, c in self.correct.items():
            tensors[f"correct/{mid}"] = c
        tensors["rng/joint"] = self.joint_rng.get_state()
        for key, value in self.stream.state_dict().items():
            tensors[f"stream/{key}"] = value
        rng_state = self.rng.getstate()
        state = {
            "config": json.loads(self.config.model_dump_json()),
            "generation": self.generation,
            "members": [m.to_json() for m in self.members],
            "buffers": buffers,
            "python_rng": [rng_state[0], list(rng_state[1]), rng_state[2]],
            "history": self.history,
            "flops_train": self.flops_train,
            "flops_eval": self.flops_eval,
            "elapsed_s": self.total_elapsed(),
            "events_written": self.events_written,
        }
        checkpoint.write(self.folder, state, tensors)

    @classmethod
    def resume(cls, folder: Path, data: DataSet) -> NESearch:
        state, tensors = checkpoint.read(folder)
        config = SearchConfig.model_validate(state["config"])
        search = cls(config, data, folder)
        buffers = set(state["buffers"])
        store = TensorStore()
        adam: dict[str, torch.Tensor] = {}
        stream: dict[str, torch.Tensor] = {}
        for name, value in tensors.items():
            kind, key = name.split("/", 1)
            if kind == "store":
                store.add(key, value.to(search.device), buffer=key in buffers)
            elif kind == "adam":
                adam[key] = value.to(search.device)
            elif kind == "correct":
                search.correct[key] = value
            elif kind == "stream":
                stream[key] = value
        search.store = store
        search.optimizer.load_state_tensors(adam)
        search.joint_rng.set_state(tensors["rng/joint"])
        search.stream.load_state_dict(stream)
        version, internal, gauss = state["python_rng"]
        search.rng.setstate((version, tuple(internal), gauss))
        search.members = [Member.from_json(d) for d in state["members"]]
        search.generation = state["generation"]
        search.history = state["history"]
        search.flops_train = state["flops_train"]
        search.flops_eval = state["flops_eval"]
        search.elapsed_s = state["elapsed_s"]
        search.events_written = state["events_written"]
        events = folder / "events.jsonl"
        if events.exists():  # drop events of the generation the kill interrupted
            lines = events.read_text().splitlines()[: search.events_written]
            atomic_write_text(events, "".join(line + "\n" for line in lines))
        return search

    # ---- results -------------------------------------------------------------------------------
    def final_selection(self) -> list[Member]:
        return self.select(self.config.keep)

    def evaluation_on(self, member: Member, split) -> Evaluation:
        return evaluate(self.module(member), self.data, split, self.device, self.config.eval_batch_size)
