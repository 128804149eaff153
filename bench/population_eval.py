"""Evaluating a population in one pass against member by member.

NE (painter-base start, M = 10, K = 3) runs 5 generations on CIFAR-10 (short training:
the architectures are what matters here), then the M members are evaluated on the 5,000
validation images both ways, timed side by side (median of interleaved repeats). Target:
population pass ≤ 0.5× the member-by-member time.

    python -m bench.population_eval [--data-dir DIR] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.ne_cifar import ensure_cifar
from bench.timing import interleaved
from evoir.backends.torch_fx.population import lower_population
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.evaluate import evaluate, evaluate_population
from evoir.search.start import initial_network
from evoir.search.strategies import new_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--steps", type=int, default=20, help="N_i = N_j (short: only the shapes matter)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    cfg = SearchConfig(
        dataset="cifar10",
        data_dir=str(args.data_dir),
        population=10,
        keep=3,
        generations=5,
        initial_steps=args.steps,
        steps=args.steps,
        seed=args.seed,
    )
    data = load_dataset("cifar10", args.data_dir, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        search = new_search(cfg, data, Path(folder))
        search.start(*initial_network("painter-base", data, args.seed))
        search.run()
    members = search.members
    device = torch.device("cpu")
    modules = [search.module(m) for m in members]
    population, u = lower_population([m.graph for m in members], search.store)

    def one_by_one():
        return [evaluate(mod, data, data.val, device) for mod in modules]

    def together():
        return evaluate_population(population, len(members), data, data.val, device)

    same = all(
        torch.equal(a.correct, b.correct) and torch.equal(a.probs, b.probs)
        for a, b in zip(one_by_one(), together(), strict=True)
    )
    times = interleaved({"member by member": one_by_one, "population": together}, repeats=args.repeats)
    ratio = times["population"] / times["member by member"]
    print(
        f"{len(members)} NE members after 5 generations, {len(data.val)} validation images, CPU x{torch.get_num_threads()}"
    )
    print(
        f"  nodes: {u.member_nodes} over the members, {len(u.graph.nodes)} in the population "
        f"({100 * u.shared_fraction:.0f}% computed once instead of per member)"
    )
    print(f"  member by member: {times['member by member']:.2f} s")
    print(f"  population pass:  {times['population']:.2f} s")
    print(f"  ratio: {ratio:.2f} (target <= 0.5); identical outputs: {same}")


if __name__ == "__main__":
    main()
