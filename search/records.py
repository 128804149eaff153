"""What a generation's end writes: the history record (printed, plotted, checkpointed) and one
event per member in ``events.jsonl``."""

from __future__ import annotations

from evoir.analysis import analyze

from .member import Member
from .metric import Metric
from .population import Population
from .selection import coverage


def generation_record(
    population: Population, generation: int, selected: list[str], metric: Metric, **counts
) -> dict:
    """The history record of ``generation``; ``counts`` are the run's ``flops_train``,
    ``flops_eval``, ``elapsed_s`` and the mean ``train_loss`` since the last generation.
    Validation figures are ``metric``'s values (``best_val_acc``, or ``best_val_loss``)."""
    members, store = population.members, population.store
    ids = [m.id for m in members]
    best = population.best()
    sizes = tensor_bytes(store)
    return {
        "generation": generation,
        "members": len(members),
        f"best_val_{metric.key}": _value(metric, best),
        "best": best.id,
        f"mean_val_{metric.key}": _mean(metric, members),
        # Which validation examples some member gets right; a table gives no examples.
        "coverage": coverage(population.correct, ids) if all(i in population.correct for i in ids) else None,
        "flops_train": counts["flops_train"],
        "flops_eval": counts["flops_eval"],
        "store_bytes": sum(sizes.values()),
        "independent_bytes": sum(sizes.get(tid, 0) for m in members for tid in m.graph.tensor_ids()),
        "params_best": analyze(best.graph).params,
        "elapsed_s": round(counts["elapsed_s"], 2),
        "train_loss": counts.get("train_loss"),
        "parents_selected": selected,
        "evaluated": population.evaluated,
    }


def tensor_bytes(store) -> dict[str, int]:
    """Each tensor's bytes, a storage shared by several tensors (views) counted once, for
    the first of them (as ``TensorStore.nbytes``, in one pass)."""
    seen: set[int] = set()
    sizes = {}
    for tid, t in store.items():
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen and key != 0:
            sizes[tid] = 0
            continue
        seen.add(key)
        sizes[tid] = storage.nbytes()
    return sizes


def _value(metric: Metric, m: Member) -> float | None:
    return None if m.val_score is None else metric.value(m.val_score)


def _mean(metric: Metric, members: list[Member]) -> float | None:
    """The members' mean value (a member not evaluated counts as the worst score, 0 accuracy,
    as it always has; for a loss such a member is left out)."""
    if metric.higher_is_better:
        return sum(m.val_score or 0 for m in members) / len(members)
    values = [metric.value(m.val_score) for m in members if m.val_score is not None]
    return sum(values) / len(values) if values else None


def member_event(generation: int, m: Member, metric: Metric) -> dict:
    a = analyze(m.graph)
    event = {
        "generation": generation,
        "id": m.id,
        "parent": m.parent,
        "passes": m.passes,
        "params": a.params,
        "flops": a.flops,
        f"val_{metric.key}": _value(metric, m),
        "lr": m.lr,
        "weight_decay": m.weight_decay,
        "steps": m.steps,
        "born": m.born,
    }
    for key in ("genome", "parents", "worker", "retries"):
        value = getattr(m, key)
        if value:
            event[key] = value
    return event
