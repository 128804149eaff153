"""The end of a run: test-set results, the saved best member and ensemble, summary and plots.

The test split is touched here and nowhere else (Real et al.; the report §5.3).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from evoir.analysis import analyze
from evoir.backends.torch_fx import lower
from evoir.modelfile import atomic_write_text, load_model, save_model

from . import ensemble, plots
from .dataset import Split
from .engine import Search
from .evaluate import Evaluation, accuracy_of_probs, evaluate, evaluate_mixture
from .member import Member
from .summary import plot_names, summary_markdown
from .table import TableEvaluator


def read_events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finalize(search: Search) -> dict:
    """Evaluate on the test split and write best.json, ensemble/, summary.md and the plots.

    A run stopped before any member was evaluated (a budget shorter than the first
    candidate's training) has no best member: ``results.json`` says ``"best": null``,
    ``summary.md`` says so in one line, and no model file is written."""
    folder, data, cfg = search.folder, search.data, search.config
    metric, key = data.metric, data.metric.key
    if not any(m.val_score is not None for m in search.members):
        return _nothing_evaluated(search)
    final = search.final_selection()
    last = max(final, key=lambda m: m.rank)
    # One pass over each split for all the final members (shared nodes once, stacks batched).
    test = dict(zip([m.id for m in final], search.evaluations_on(final, data.test), strict=True))
    champion = search.champion
    champion.consider(search)  # members evaluated after a stop count too
    network = champion.snapshot()
    assert champion.record is not None and champion.member is not None and network is not None
    best, graph = champion.member, network[0]
    results = {
        "best": {
            "id": best.id,
            "generation": champion.record.generation,
            f"test_{key}": _champion_test(search, test).of(metric),
            f"val_{key}": metric.value(best.rank),
            "params": analyze(graph).params,
            "flops": analyze(graph).flops,
            **({"genome": best.genome} if best.genome is not None else {}),
            "lineage": list(graph.metadata.get("lineage", ())),
        },
        "last_generation_best": {
            "id": last.id,
            f"test_{key}": test[last.id].of(metric),
            f"val_{key}": metric.value(last.rank),
            # the returned snapshot itself, or another network (another member, or the same
            # member's shared tensors trained further since it was best)
            "is_best": last.id == best.id and champion.record.generation == search.generation,
        },
        "flops_spent": search.flops_train + search.flops_eval,
        "flops_train": search.flops_train,
        "generations": search.generation,
        "strategy": cfg.strategy,
        "candidates_evaluated": search.evaluated or len(search.correct),
        "elapsed_s": round(search.total_elapsed(), 1),
        "stopped": search.stopped,
        "dropped": [e for e in read_events(folder) if "dropped" in e],
    }
    evaluator = search.trainer.evaluator
    if isinstance(evaluator, TableEvaluator):
        results["table"] = evaluator.summary(read_events(folder))
    base_path = folder / "base.json"
    if base_path.exists():
        base, base_store = load_model(base_path)
        ev = evaluate(
            lower(base, base_store.to(search.device)), data, data.test, search.device, cfg.eval_batch_size
        )
        results["base"] = {
            f"test_{key}": ev.of(metric),
            "params": analyze(base).params,
            "flops": analyze(base).flops,
        }
    if all(test[m.id].probs is not None for m in final):  # a table has no predictions to ensemble
        results.update(_ensembles(search, final, test))
    elif all(test[m.id].losses is not None for m in final) and len(final) > 1:
        results.update(_text_ensemble(search, final))
    results["seconds"] = search.job.time_spent()
    atomic_write_text(folder / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(folder / "summary.md", summary_markdown(search, results))
    events = [e for e in read_events(folder) if "dropped" not in e]  # a dropped member has no accuracy
    per_generation, vs_flops = plot_names(metric)
    plots.validation_per_generation(events, search.history, folder / per_generation, metric)
    plots.validation_vs_flops(search.history, folder / vs_flops, metric)
    plots.lineage_tree(events, [m.id for m in final], folder / "lineage.png", metric)
    return results


def _champion_test(search: Search, final_tests: dict[str, Evaluation]) -> Evaluation:
    """The champion's test evaluation, of its snapshot's weights (a table looks its cell up).
    A champion of the last generation has trained no further since: its evaluation is among
    the final members'."""
    champion = search.champion
    member, network, record = champion.member, champion.snapshot(), champion.record
    assert member is not None and network is not None and record is not None
    if record.generation == search.generation and member.id in final_tests and not search.stopped:
        return final_tests[member.id]
    if search.trainer.evaluator is not None:
        return search.evaluations_on([member], search.data.test)[0]
    graph, store = network
    module = lower(graph, store.to(search.device))
    return evaluate(module, search.data, search.data.test, search.device, search.config.eval_batch_size)


def _ensembles(search: Search, final: list[Member], test: dict[str, Evaluation]) -> dict:
    """The final members as ensembles (mean probabilities; a head learned on the validation
    split), their test accuracies, and their files in ``ensemble/``."""
    data = search.data
    assert isinstance(data.val, Split) and isinstance(data.test, Split)
    val_probs = [_probs(ev) for ev in _validation_of(search, final)]
    probs = [_probs(test[m.id]) for m in final]
    head = ensemble.train_head(val_probs, data.val.labels, data.classes, seed=search.config.seed)
    ens = _save_ensemble(search, final, hierarchical=True)
    head_path = ens / "head.safetensors"
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
        str(head_path) + ".tmp",
    )
    Path(str(head_path) + ".tmp").replace(head_path)
    labels = data.test.labels
    return {
        "ensemble": {
            "members": [m.id for m in final],
            "test_acc": accuracy_of_probs(ensemble.average(probs), labels),
            "params": sum(analyze(m.graph).params for m in final),
        },
        "hierarchical": {"test_acc": accuracy_of_probs(ensemble.hierarchical(head, probs), labels)},
    }


def _save_ensemble(search: Search, final: list[Member], hierarchical: bool) -> Path:
    """The members' model files and ``ensemble.json`` in ``RUN/ensemble/``."""
    ens = search.folder / "ensemble"
    ens.mkdir(exist_ok=True)
    for m in final:
        save_model(ens / f"{m.id}.json", m.graph, search.store)
    described = {
        "members": [f"{m.id}.json" for m in final],
        "average": "mean of the members' softmax probabilities",
    }
    if hierarchical:
        described["hierarchical_head"] = (
            "head.safetensors: linear layer over the concatenated log-probabilities, trained on the validation split"
        )
    atomic_write_text(ens / "ensemble.json", json.dumps(described, indent=1) + "\n")
    return ens


def _text_ensemble(search: Search, final: list[Member]) -> dict:
    """Language models as an ensemble: the loss of their mean next-character probabilities,
    evaluated batch by batch (``evaluate_mixture``). No learned head: one over K × vocabulary
    log-probabilities per position is left out."""
    data = search.data
    _save_ensemble(search, final, hierarchical=False)
    module = search.trainer.population_module(final)
    ev = evaluate_mixture(module, data, data.test, search.device, search.config.eval_batch_size)
    return {
        "ensemble": {
            "members": [m.id for m in final],
            "test_loss": ev.loss,
            "params": sum(analyze(m.graph).params for m in final),
        }
    }


def _probs(ev: Evaluation) -> torch.Tensor:
    assert ev.probs is not None, "ensembles are made of evaluations with predictions"
    return ev.probs


def _validation_of(search: Search, members: list[Member]) -> list[Evaluation]:
    """The members' validation evaluations: the latest if every one is current (training
    since then would have cleared it), else evaluated now."""
    if all(m.id in search.validation and search.validation[m.id].steps == m.steps for m in members):
        return [search.validation[m.id] for m in members]
    return search.evaluations_on(members, search.data.val)


def _nothing_evaluated(search: Search) -> dict:
    cfg = search.config
    results = {
        "best": None,
        "strategy": cfg.strategy,
        "generations": search.generation,
        "candidates_evaluated": 0,
        "flops_train": search.flops_train,
        "flops_spent": search.flops_train + search.flops_eval,
        "elapsed_s": round(search.total_elapsed(), 1),
        "stopped": search.stopped,
        "seconds": search.job.time_spent(),
    }
    why = f"stopped ({search.stopped})" if search.stopped else "ended"
    line = (
        f"No member was evaluated: the run {why} before its first candidate finished training; "
        f"`evoir search --resume {search.folder}` continues it."
    )
    atomic_write_text(search.folder / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(
        search.folder / "summary.md", f"# evoir search: {cfg.strategy} on {cfg.dataset}\n\n{line}\n"
    )
    return results
