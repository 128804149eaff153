"""Steady-state candidates on workers: one candidate per task (``steady.py``)."""

from __future__ import annotations

from ..steady import Proposal, SteadyStateSearch
from .task import make_task, take_steps, take_tensors


def candidate_task(search: SteadyStateSearch, proposal: Proposal) -> dict:
    """A task that trains ``proposal``'s candidate from its recorded stream and RNG state
    and evaluates it."""
    return make_task(
        search,
        [proposal.member],
        proposal.steps,
        each=False,
        evaluate=True,
        stream=proposal.stream,
        joint_rng=search.joint_rng.get_state(),
        rng=proposal.rng,
    )


def take_result(search: SteadyStateSearch, proposal: Proposal, result: dict) -> None:
    """A candidate's trained tensors, steps and evaluation into the driver's state."""
    member = proposal.member
    take_tensors(search, result)
    take_steps(search, [member], result)
    if member.dropped is None:
        search.record_evaluation(member, result["evaluations"][member.id])
