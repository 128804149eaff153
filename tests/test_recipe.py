"""The training recipe: each optimiser, schedule, label smoothing, gradient clipping and bf16,
against torch's own optimisers and schedulers; where a schedule's steps lie in a search; the
recipe crossing to workers, through checkpoints and into ``evoir train``'s optimiser file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from evoir.backends.torch_fx import lower
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.dispatch import schedule_phase
from evoir.search.member import Member
from evoir.search.optim import OptimizerSettings, SharedOptimizer
from evoir.search.recipe import TrainSettings
from evoir.search.schedule import Phase, Schedule
from evoir.search.strategies import resume_search
from evoir.search.trainer import Trainer
from evoir.search.workers.task import execute, make_task, run_task
from evoir.templates import TEMPLATES

from .conftest import assert_user_error
from .test_strategies import _fresh, kill_during

OPTIMIZERS = {
    "adam": (OptimizerSettings("adam"), lambda ps, lr, wd: torch.optim.Adam(ps, lr=lr, weight_decay=wd)),
    "adamw": (OptimizerSettings("adamw"), lambda ps, lr, wd: torch.optim.AdamW(ps, lr=lr, weight_decay=wd)),
    "sgd": (
        OptimizerSettings("sgd", momentum=0.9),
        lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd),
    ),
    "nesterov": (
        OptimizerSettings("sgd", momentum=0.8, nesterov=True),
        lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, momentum=0.8, nesterov=True, weight_decay=wd),
    ),
    "sgd-plain": (OptimizerSettings("sgd", momentum=0.0), lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr)),
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_each_optimizer_steps_as_torch_s_own(kind):
    ours_settings, theirs_of = OPTIMIZERS[kind]
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(5, 3))
    p2 = torch.nn.Parameter(p1.detach().clone())
    decay = 0.0 if kind == "sgd-plain" else 1e-2
    ours, theirs = SharedOptimizer(ours_settings), theirs_of([p2], 0.05, decay)
    for _ in range(6):
        g = torch.randn(5, 3)
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step({"w": p1}, lr=0.05, weight_decay=decay)
        theirs.step()
    torch.testing.assert_close(p1, p2)
    assert float(ours.state["w"]["step"]) == 6


def _torch_scheduler(schedule: Schedule, total: int, opt=None):
    """torch's scheduler of ``schedule`` over ``opt`` (default: a dummy optimiser at lr 1)."""
    opt = opt or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = torch.optim.lr_scheduler
    warm = int(schedule.warmup * total)
    if schedule.kind == "onecycle":
        pct = schedule.warmup or 0.3
        top = opt.param_groups[0]["lr"]
        return opt, s.OneCycleLR(opt, max_lr=top, total_steps=total, pct_start=pct, cycle_momentum=False)
    after = (
        s.ConstantLR(opt, factor=1.0, total_iters=0)
        if schedule.kind == "constant"
        else s.CosineAnnealingLR(opt, T_max=total - warm)
    )
    if not warm:
        return opt, after
    ramp = s.LinearLR(opt, start_factor=1 / (warm + 1), end_factor=1.0, total_iters=warm)
    return opt, s.SequentialLR(opt, [ramp, after], milestones=[warm])


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule("constant"),
        Schedule("constant", 0.2),
        Schedule("cosine"),
        Schedule("cosine", 0.1),
        Schedule("onecycle"),
        Schedule("onecycle", 0.25),
    ],
    ids=str,
)
def test_schedules_are_torch_s_schedulers_step_for_step(schedule):
    total = 40
    opt, scheduler = _torch_scheduler(schedule, total)
    for t in range(total):
        assert schedule.factor(t, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-9), t
        opt.step()
        scheduler.step()


def test_cosine_ends_near_zero_and_onecycle_starts_at_a_25th():
    assert Schedule("cosine").factor(99, 100) < 1e-3
    assert Schedule("onecycle").factor(0, 100) == pytest.approx(1 / 25)
    assert Schedule("constant").factor(99, 100) == 1.0


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=1)


def _mlp(data, seed=0):
    return TEMPLATES["mlp"](input_shape=data.input_shape, classes=data.classes, seed=seed)


@pytest.mark.parametrize("kind", ["adam", "adamw", "nesterov"])
def test_a_trainer_with_a_recipe_is_torch_s_plain_loop(data, kind):
    """Schedule, label smoothing and clipping: one member trained by the trainer ends with the
    tensors of torch's optimiser, scheduler, loss and ``clip_grad_norm_`` on the same batches."""
    settings_opt, theirs_of = OPTIMIZERS[kind]
    schedule = Schedule("cosine", 0.2)
    settings = TrainSettings(
        batch_size=16, optimizer=settings_opt, schedule=schedule, label_smoothing=0.1, grad_clip=0.5
    )
    graph, store = _mlp(data)
    reference = store.clone()
    trainer = Trainer(data, store, settings, torch.device("cpu"), stream_seed=4, joint_seed=5)
    batches = trainer.stream.at(trainer.stream.state_dict())
    steps, lr, decay = 12, 0.02, 1e-3
    trainer.joint_train(steps, [Member("a", graph, None, [], lr, decay, born=0)])

    module = lower(graph, reference)
    opt = theirs_of(list(module.parameters()), lr, decay)
    _, scheduler = _torch_scheduler(schedule, steps, opt)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(steps):
        x, y = batches.next()
        loss_fn(module(x), y).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        scheduler.step()
    for tid in store:
        torch.testing.assert_close(store[tid], reference[tid], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_trains_and_changes_the_arithmetic(data):
    graph, store = _mlp(data)
    results = {}
    for precision in ("fp32", "bf16"):
        s = store.clone()
        t = Trainer(
            data, s, TrainSettings(precision=precision), torch.device("cpu"), stream_seed=1, joint_seed=1
        )
        member = Member("a", graph, None, [], 0.003, 0.0, born=0)
        t.joint_train(5, [member])
        assert member.steps == 5 and member.dropped is None
        results[precision] = s
    some = next(iter(store))
    assert not torch.equal(results["fp32"][some], results["bf16"][some])
    torch.testing.assert_close(results["fp32"][some], results["bf16"][some], atol=0.05, rtol=0.05)


def test_run_scope_spans_the_whole_run_and_generation_scope_each_generation():
    run = SearchConfig(initial_steps=10, steps=5, generations=3)
    assert schedule_phase(run, 0, 10) == Phase(0, 10, 25)
    assert schedule_phase(run, 2, 5) == Phase(15, 5, 25)
    assert schedule_phase(run, 3, 5) == Phase(20, 5, 25)
    each = run.model_copy(update={"schedule_scope": "generation"})
    assert schedule_phase(each, 2, 5) == Phase(0, 5, 5)
    # A worker's share of a generation spans the generation's whole stretch.
    share = Phase(15, 5, 25)
    assert [share.step(i, 2) for i in range(2)] == [15, 17.5]


@pytest.mark.no_auto_verify
def test_an_ne_run_takes_each_step_of_one_schedule_once(tmp_path, data):
    search = _fresh("ne", tmp_path / "run", 3, data)
    search.config = search.config.model_copy(update={"schedule": "cosine"})
    seen = []
    original = search.trainer.at_schedule_step

    def record(t, total):
        seen.append((t, total))
        original(t, total)

    search.trainer.at_schedule_step = record
    search.run()
    cfg = search.config
    total = cfg.initial_steps + cfg.generations * cfg.steps
    assert seen == [(float(t), total) for t in range(total)]


def test_a_task_s_phase_is_used_on_a_worker_as_in_this_process(data):
    graph, store = _mlp(data)
    settings = TrainSettings(batch_size=8, optimizer=OptimizerSettings("sgd"), schedule=Schedule("cosine"))
    ends = {}
    for phase in (None, Phase(6, 6, 12)):
        here = Trainer(data, store.clone(), settings, torch.device("cpu"), stream_seed=2, joint_seed=2)
        member = Member("a", graph, None, [], 0.05, 0.0, born=0)
        task = make_task(
            [member],
            6,
            settings,
            stream=here.stream.state_dict(),
            joint_rng=here.joint_rng.get_state(),
            rng=torch.get_rng_state(),
            phase=phase,
        )
        remote = run_task(task.packed(here.store, here.optimizer), data)
        execute(here, task)
        for tid in store:
            torch.testing.assert_close(remote.tensors[tid], here.store[tid])
        assert set(remote.moments) == set(here.optimizer.state)
        ends[phase] = here.store
    some = next(iter(store))
    assert not torch.equal(ends[None][some], ends[Phase(6, 6, 12)][some])


@pytest.mark.no_auto_verify
@pytest.mark.parametrize(
    "strategy,recipe",
    [
        (
            "ne",
            {"optimizer": "sgd", "nesterov": True, "lr": 0.05, "schedule": "cosine", "label_smoothing": 0.1},
        ),
        ("regularized", {"optimizer": "adamw", "schedule": "onecycle", "grad_clip": 1.0}),
    ],
)
def test_a_run_with_a_recipe_resumes_to_the_uninterrupted_result(tmp_path, data, strategy, recipe):
    def fresh(name):
        search = _fresh(strategy, tmp_path / name, 3, data)
        search.config = search.config.model_copy(update=recipe)
        search.trainer.settings = TrainSettings.of(search.config)
        search.trainer.optimizer.settings = search.trainer.settings.optimizer
        (tmp_path / name / "config.json").write_text(search.config.model_dump_json())
        return search

    full = fresh("full")
    full.run()
    cut = fresh("cut")
    kill_during(cut, 2)
    resumed = resume_search(tmp_path / "cut", data)
    assert resumed.config.optimizer == recipe["optimizer"]
    resumed.run()

    def events(folder):
        return [
            (e["id"], e["val_acc"])
            for e in map(json.loads, (folder / "events.jsonl").read_text().splitlines())
        ]

    assert events(tmp_path / "cut") == events(tmp_path / "full")


def test_the_config_of_a_search_records_the_recipe(evoir_cli, tmp_path):
    result = evoir_cli(
        "search", "--dataset", "synthetic", "-M", "2", "-K", "1", "-G", "1", "--start", "mlp",
        "--initial-steps", "4", "--steps", "3", "--optimizer", "sgd", "--nesterov", "--schedule", "onecycle",
        "--warmup", "0.25", "--label-smoothing", "0.05", "--grad-clip", "2", "--schedule-scope", "generation",
        "--out", "run",
    )  # fmt: skip
    assert result.code == 0, result.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["optimizer"] == "sgd" and config["nesterov"] is True and config["schedule"] == "onecycle"
    assert config["warmup"] == 0.25 and config["grad_clip"] == 2 and config["schedule_scope"] == "generation"


def test_evoir_train_keeps_the_optimizer_state_beside_the_model(evoir_cli, tmp_path):
    assert evoir_cli("new", "mlp", "--input", "3,16,16", "-o", "m.json").code == 0
    result = evoir_cli("train", "m.json", "--steps", "5", "--optimizer", "sgd", "-o", "a.json")
    assert result.code == 0, result.err
    first = load_file(str(tmp_path / "a.optim.safetensors"))
    steps = {k: float(v) for k, v in first.items() if k.startswith("step/")}
    assert steps and set(steps.values()) == {5.0}
    assert any(k.startswith("momentum_buffer/") for k in first)
    result = evoir_cli("train", "a.json", "--steps", "2", "--optimizer", "sgd", "-o", "b.json")
    assert result.code == 0, result.err
    second = load_file(str(tmp_path / "b.optim.safetensors"))
    assert {float(v) for k, v in second.items() if k.startswith("step/")} == {7.0}  # continued, not reset
    # Another optimiser's state is not used, and the user is told.
    result = evoir_cli("train", "a.json", "--steps", "1", "--optimizer", "adam", "-o", "c.json")
    assert result.code == 0 and "a.optim.safetensors holds sgd state; adam starts afresh" in result.err
    third = load_file(str(tmp_path / "c.optim.safetensors"))
    assert {float(v) for k, v in third.items() if k.startswith("step/")} == {1.0}


def test_recipe_mistakes_are_one_line(evoir_cli):
    result = evoir_cli("train", "m.json", "--optimizer", "lamb")
    assert result.code == 2 and "'lamb' is not one of 'adam', 'adamw', 'sgd'" in result.err
    assert evoir_cli("new", "mlp", "--input", "3,16,16", "-o", "m.json").code == 0
    result = evoir_cli("train", "m.json", "--warmup", "1.5")
    assert result.code == 2 and "--warmup" in result.err


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.no_auto_verify
def test_tensorboard_scalars_of_a_search_and_of_a_training(evoir_cli, tmp_path):
    args = ["-M", "2", "-K", "1", "-G", "2", "--start", "mlp", "--initial-steps", "4", "--steps", "3"]
    result = evoir_cli("search", "--dataset", "synthetic", *args, "--tensorboard", "--out", "run")
    assert result.code == 0, result.err
    scalars = _scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in scalars["val/best"]] == [0, 1, 2]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [v for _, v in scalars["val/best"]] == pytest.approx([h["best_val_acc"] for h in history])
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([h["train_loss"] for h in history])
    assert all(0 < h["train_loss"] < 10 for h in history)

    assert evoir_cli("new", "mlp", "--input", "3,16,16", "-o", "m.json").code == 0
    result = evoir_cli("train", "m.json", "--steps", "200", "--tensorboard", "-o", "t.json")
    assert result.code == 0, result.err
    scalars = _scalars(tmp_path / "t.tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(2, 201, 2))
    assert scalars["train/loss"][-1][1] < scalars["train/loss"][0][1]  # it learns
    assert scalars["val/accuracy"][0][0] == 200


def test_tensorboard_without_its_package_is_one_line(evoir_cli, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = evoir_cli("search", "--dataset", "synthetic", "--tensorboard", "--out", "run")
    assert_user_error(result, "--tensorboard needs the tensorboard package")
    assert not (tmp_path / "run").exists()
