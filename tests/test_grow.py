"""``evoir.grow``: a network grown inside a plain PyTorch training loop keeps its function, its
parameters (the same objects) and its optimiser state, and trains on."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import evoir
from evoir import EvoirError
from evoir.backends.torch_fx.state_map import StateMap
from evoir.passes.base import Pass, PassResult, Preserves
from evoir.passes.rewrite import Rewriter

from .test_import import Unsupported


class Tiny(nn.Module):
    """A stem, one residual block and a linear head over a 2×2 pooled map: net2wider at the stem
    widens a residual-tied group (stem and conv2 with their BNs) read by conv1 and, through the
    flatten, by the head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * 2 * 2, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(y)))
        return self.head(torch.flatten(self.pool(x), 1))


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adam-amsgrad": lambda params: torch.optim.Adam(params, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "sgd-nesterov": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
}


def data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x, y) -> float:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def trained(optimizer_name: str, steps: int = 3):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    x, y = data()
    for _ in range(steps):
        step(model, optimizer, x, y)
    return model, optimizer, x, y


def twin_of(model: nn.Module, optimizer: torch.optim.Optimizer):
    """An independent copy of the model and its optimiser, to train on without growth."""
    twin = copy.deepcopy(model)
    twin_optimizer = type(optimizer)(twin.parameters())
    # a deep copy: load_state_dict would keep the very state tensors, which the grown
    # module's optimiser goes on updating in place
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return twin, twin_optimizer


def among(tensor: torch.Tensor, tensors) -> bool:
    """Whether ``tensor`` is one of ``tensors`` (identity, not value: ``in`` compares values)."""
    return any(tensor is t for t in tensors)


def outputs_in(mode: bool, *modules: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for module in modules:
        was = module.training
        module.train(mode)
        with torch.no_grad():
            out.append(module(x))
        module.train(was)
    return out


# ---- R2R growth: every parameter kept, the optimisation continues unchanged ----------------


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("op", ["widen", "deepen", "inception"])
def test_r2r_growth_keeps_function_parameters_and_optimizer_state(optimizer_name, op):
    model, optimizer, x, y = trained(optimizer_name)
    twin, twin_optimizer = twin_of(model, optimizer)
    old_params = list(model.parameters())
    loss_before = F.cross_entropy(model(x), y)

    new, new_optimizer = evoir.grow(model, optimizer, op, example_input=x, seed=1)

    # the function, in train and eval mode, and the loss at the growth step
    assert new.training
    assert torch.equal(F.cross_entropy(new(x), y), loss_before)
    for mode in (True, False):
        old_out, new_out = outputs_in(mode, model, new, x=x)
        torch.testing.assert_close(new_out, old_out, rtol=0, atol=1e-6)
    # every parameter is the very object, with the very state tensors
    new_params = list(new.parameters())
    assert all(any(p is q for q in new_params) for p in old_params)
    for p in old_params:
        assert new_optimizer.state[p].keys() == optimizer.state[p].keys()
        assert all(new_optimizer.state[p][k] is optimizer.state[p][k] for k in optimizer.state[p])
    assert type(new_optimizer) is type(optimizer)
    hyper = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    assert {k: v for k, v in new_optimizer.param_groups[0].items() if k != "params"} == hyper
    assert new_optimizer.defaults == optimizer.defaults
    # the new parameters: in the optimiser, fresh
    grown = [q for q in new_params if not any(q is p for p in old_params)]
    assert grown and all(among(q, new_optimizer.param_groups[0]["params"]) for q in grown)
    assert not any(new_optimizer.state.get(q) for q in grown)
    before_step = [q.detach().clone() for q in grown]

    loss = step(new, new_optimizer, x, y)
    twin_loss = step(twin, twin_optimizer, x, y)
    assert loss == twin_loss
    # a zero block passes no gradient to the old parameters: they move exactly as without growth
    for p, q in zip(old_params, twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # the zero fan-out (β) learns from the first step: every new tensor with a gradient moved,
    # a zero one among them, and has state now
    learning = [(q, before) for q, before in zip(grown, before_step, strict=True) if q.grad.any()]
    assert any(not before.any() for _, before in learning)
    assert all(not torch.equal(q, before) and new_optimizer.state.get(q) for q, before in learning)


def test_loss_stays_continuous_over_several_steps_after_growth():
    model, optimizer, x, y = trained("adam")
    twin, twin_optimizer = twin_of(model, optimizer)
    new, new_optimizer = evoir.grow(model, optimizer, "widen", example_input=x, at="add", channels=4)
    losses = [step(new, new_optimizer, x, y) for _ in range(3)]
    twin_losses = [step(twin, twin_optimizer, x, y) for _ in range(3)]
    assert losses[0] == twin_losses[0]
    # from the second step on β is off zero and the block contributes; both runs keep learning
    assert losses[-1] < losses[0] and twin_losses[-1] < twin_losses[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8),
        lambda opt: torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=2),
                torch.optim.lr_scheduler.StepLR(opt, 2),
            ],
            milestones=[2],
        ),
    ],
    ids=["cosine", "sequential"],
)
def test_a_scheduler_moves_onto_the_new_optimizer_and_its_schedule_goes_on(make):
    model, optimizer, x, y = trained("sgd-momentum", steps=0)
    scheduler = make(optimizer)
    twin_optimizer = OPTIMIZERS["sgd-momentum"](copy.deepcopy(model).parameters())
    twin_scheduler = make(twin_optimizer)  # the schedule as it runs without growth (no gradients)
    for _ in range(3):
        step(model, optimizer, x, y), scheduler.step()
        twin_optimizer.step(), twin_scheduler.step()
    new, new_optimizer = evoir.grow(
        model, optimizer, "widen", example_input=x, at="add", channels=4, scheduler=scheduler
    )
    assert scheduler.optimizer is new_optimizer
    assert all(s.optimizer is new_optimizer for s in getattr(scheduler, "_schedulers", ()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a scheduler's optimizer looks wrong
        for _ in range(4):
            step(new, new_optimizer, x, y), scheduler.step()
            twin_optimizer.step(), twin_scheduler.step()
            assert [g["lr"] for g in new_optimizer.param_groups] == [
                g["lr"] for g in twin_optimizer.param_groups
            ]


def test_a_scheduler_of_another_optimizer_is_refused():
    model, optimizer, x, _ = trained("adam", steps=0)
    other = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), 2)
    with pytest.raises(EvoirError, match="scheduler StepLR does not drive the optimizer given"):
        evoir.grow(model, optimizer, "widen", example_input=x, at="add", channels=4, scheduler=other)


def test_a_grown_module_grows_again_from_the_graph_it_carries():
    model, optimizer, x, y = trained("sgd-momentum")
    first, first_optimizer = evoir.grow(model, optimizer, "widen", example_input=x, seed=0)
    step(first, first_optimizer, x, y)
    second, second_optimizer = evoir.grow(first, first_optimizer, "deepen", example_input=x, seed=0)
    lineage = second.evoir_graph.metadata["lineage"]
    assert [line.split("{")[0] for line in lineage] == ["widen", "deepen"]
    assert all(any(p is q for q in second.parameters()) for p in first.parameters())
    for p in first.parameters():
        buffer = first_optimizer.state[p]["momentum_buffer"]
        assert second_optimizer.state[p]["momentum_buffer"] is buffer
    torch.testing.assert_close(second(x), first(x), rtol=0, atol=1e-6)
    with pytest.raises(EvoirError, match="grown for inputs of"):
        evoir.grow(second, second_optimizer, "widen", example_input=torch.randn(2, 3, 16, 16))


# ---- net2wider: replaced parameters carry their state, mapped like their gradients ----------


def _gradients(model: nn.Module, x, y) -> None:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_net2wider_maps_state_as_the_gradient_maps(optimizer_name):
    # lr = 0: one step fills the state from the gradient and moves nothing, so the state can be
    # compared with the grown network's gradient at the same point
    torch.manual_seed(0)
    model = Tiny()
    x, y = data()
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.8, 0.9))
    _gradients(model, x, y)
    optimizer.step()
    old_ids = {id(p) for p in model.parameters()}

    new, new_optimizer = evoir.grow(model, optimizer, "net2wider", example_input=x, at="stem", width=13)
    replaced = [q for q in new.parameters() if id(q) not in old_ids]
    # the tied group's rows (stem, conv2, their BNs' scale and shift) and its readers' columns
    # (conv1, the head's weight; not the head's bias)
    assert len(replaced) == 8
    _gradients(new, x, y)
    for q in replaced:
        state = new_optimizer.state[q]
        if optimizer_name == "sgd":
            torch.testing.assert_close(state["momentum_buffer"], q.grad, rtol=1e-5, atol=1e-7)
        else:
            torch.testing.assert_close(state["exp_avg"], 0.2 * q.grad, rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(state["exp_avg_sq"], 0.1 * q.grad**2, rtol=1e-4, atol=1e-10)
            assert float(state["step"]) == 1.0
    # the parameters net2wider did not touch keep their state tensors
    for p in model.parameters():
        if any(p is q for q in new.parameters()):
            key = "momentum_buffer" if optimizer_name == "sgd" else "exp_avg"
            assert new_optimizer.state[p][key] is optimizer.state[p][key]


def test_net2wider_growth_keeps_the_loss_and_trains_on():
    model, optimizer, x, y = trained("adamw")
    loss_before = F.cross_entropy(model(x), y)
    new, new_optimizer = evoir.grow(model, optimizer, "net2wider", example_input=x, at="stem", width=12)
    torch.testing.assert_close(F.cross_entropy(new(x), y), loss_before, rtol=1e-6, atol=0)
    assert sum(p.numel() for p in new.parameters()) > sum(p.numel() for p in model.parameters())
    losses = [step(new, new_optimizer, x, y) for _ in range(4)]
    assert losses[-1] < losses[0]


def test_state_map_scales_linear_and_quadratic_state():
    state = {
        "step": torch.tensor(3.0),
        "exp_avg": torch.tensor([[2.0, 4.0]]),
        "exp_avg_sq": torch.tensor([[4.0, 8.0]]),
    }
    rows, cols, counts = torch.tensor([0, 0]), torch.tensor([1, 0, 1]), torch.tensor([2, 2])
    carried = StateMap("w", rows, cols, counts).carry(state)
    assert carried["step"] == 3.0 and carried["step"] is not state["step"]
    assert carried["exp_avg"].tolist() == [[2.0, 1.0, 2.0]] * 2
    assert carried["exp_avg_sq"].tolist() == [[2.0, 1.0, 2.0]] * 2
    assert StateMap("w").carry({"unknown": torch.ones(2)}) == {}


# ---- param groups -----------------------------------------------------------------------------


def test_param_groups_new_parameters_join_the_group_they_grew_beside():
    torch.manual_seed(0)
    model = Tiny()
    x, y = data()
    temperature = nn.Parameter(torch.ones(()))  # the optimiser's, not the module's
    head = list(model.head.parameters())
    backbone = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.SGD(
        [{"params": backbone, "lr": 0.05}, {"params": [*head, temperature], "lr": 0.01, "weight_decay": 0.1}],
        lr=0.1,
        momentum=0.9,
    )
    for _ in range(2):
        optimizer.zero_grad()
        (F.cross_entropy(model(x), y) * temperature).backward()
        optimizer.step()

    widened, widened_optimizer = evoir.grow(model, optimizer, "widen", example_input=x, at="add")
    groups = widened_optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.05, 0.01] and groups[1]["weight_decay"] == 0.1
    grown = [q for q in widened.parameters() if all(q is not p for p in model.parameters())]
    assert grown and all(any(q is p for p in groups[0]["params"]) for q in grown)
    assert any(temperature is p for p in groups[1]["params"])
    assert (
        widened_optimizer.state[temperature]["momentum_buffer"]
        is optimizer.state[temperature]["momentum_buffer"]
    )

    wider, wider_optimizer = evoir.grow(model, optimizer, "net2wider", example_input=x, at="stem")
    new_head_weight = wider.get_submodule(wider.evoir_modules["head"]).weight
    assert new_head_weight is not model.head.weight
    assert any(new_head_weight is p for p in wider_optimizer.param_groups[1]["params"])
    assert len(wider_optimizer.param_groups[1]["params"]) == 3
    assert sum(len(g["params"]) for g in wider_optimizer.param_groups) == len(list(wider.parameters())) + 1


def test_parameters_the_optimizer_leaves_out_stay_out_but_new_ones_train():
    torch.manual_seed(0)
    model = Tiny()
    x, _ = data()
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-3)  # a frozen backbone
    new, new_optimizer = evoir.grow(model, optimizer, "widen", example_input=x, at="add")
    held = new_optimizer.param_groups[0]["params"]
    assert not any(model.stem.weight is p for p in held)
    grown = [q for q in new.parameters() if all(q is not p for p in model.parameters())]
    assert grown and all(any(q is p for p in held) for q in grown)
    assert len(held) == 2 + len(grown)


# ---- modules, devices and dtypes --------------------------------------------------------------


def test_torchvision_resnet18_grows_with_its_tensors():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    step(model, optimizer, x, y)
    loss_before = F.cross_entropy(model(x), y)
    new, new_optimizer = evoir.grow(model, optimizer, "widen", example_input=x, seed=3)
    assert torch.equal(F.cross_entropy(new(x), y), loss_before)
    assert all(any(p is q for q in new.parameters()) for p in model.parameters())
    assert all(
        new_optimizer.state[p]["momentum_buffer"] is optimizer.state[p]["momentum_buffer"]
        for p in model.parameters()
    )
    old_eval, new_eval = outputs_in(False, model, new, x=x)
    torch.testing.assert_close(new_eval, old_eval, rtol=0, atol=1e-6)
    step(new, new_optimizer, x, y)


def test_a_float64_module_gets_float64_growth():
    torch.manual_seed(0)
    model = Tiny().double()
    x, y = data()
    x = x.double()
    new, _ = evoir.grow(model, None, "deepen", example_input=x, kernel=1)
    assert {p.dtype for p in new.parameters()} == {torch.float64}
    torch.testing.assert_close(new(x), model(x), rtol=0, atol=1e-12)


class ChannelsLastMix(nn.Module):
    """A Linear over the channels of a channels-last image: the import reshapes its weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.conv(x)
        x = x + self.mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def test_a_weight_the_import_reshapes_carries_its_state_reshaped():
    torch.manual_seed(0)
    model = ChannelsLastMix()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    step(model, optimizer, x, y)
    new, new_optimizer = evoir.grow(model, optimizer, "deepen", example_input=x, at="conv", kernel=1)
    weight = new.get_submodule(new.evoir_modules["mix"]).weight
    assert weight.shape == (8, 8, 1, 1) and weight is not model.mix.weight
    old_state = optimizer.state[model.mix.weight]
    assert torch.equal(new_optimizer.state[weight]["exp_avg"], old_state["exp_avg"].reshape(8, 8, 1, 1))
    assert torch.equal(new_optimizer.state[weight]["exp_avg_sq"], old_state["exp_avg_sq"].reshape(8, 8, 1, 1))
    assert model.mix.bias is new.get_submodule(new.evoir_modules["mix"]).bias
    torch.testing.assert_close(new(x), model(x), rtol=1e-6, atol=1e-6)


def test_options_as_strings_and_pass_lines_and_no_optimizer():
    model, _, x, _ = trained("adam", steps=0)
    new, none = evoir.grow(
        model, None, "deepen", example_input=x, kernels="[1,3]", sigma="bn+gelu", at="relu"
    )
    assert none is None
    assert new.evoir_graph.metadata["lineage"][-1].startswith(
        "deepen{at=relu,channels=2,kernels=[1,3],sigma=bn+gelu"
    )
    replayed, _ = evoir.grow(model, None, "widen{at=add,channels=4,kernel=1}", example_input=x)
    assert replayed.evoir_graph.metadata["lineage"][0].startswith("widen{at=add,channels=4,kernel=1,")


def test_a_pass_that_changes_the_function_returns_changed_weights_unchecked():
    model, optimizer, x, y = trained("adam")
    new, new_optimizer = evoir.grow(model, optimizer, "reset-weights", example_input=x, seed=1)
    assert not torch.allclose(new(x), model(x))
    assert not any(p is q for p in model.parameters() for q in new.parameters())
    assert not new_optimizer.state
    step(new, new_optimizer, x, y)


@dataclass(frozen=True)
class Breaking(Pass):
    """Claims to keep the function but doubles the head's weight (the check must catch it)."""

    name: ClassVar[str] = "breaking"
    preserves: ClassVar[Preserves] = Preserves.EVAL_AND_TRAIN

    def run(self, graph, store):
        rw = Rewriter(graph, store)
        head = graph.node("head")
        rw.replace(rw.replace_tensors(head, {"weight": store[head.params["weight"]].detach() * 2}))
        return PassResult(rw.finish(), rw.added, True, self)


@pytest.mark.no_auto_verify
def test_the_check_refuses_a_pass_that_changed_the_function():
    model, optimizer, x, _ = trained("adam", steps=1)
    with pytest.raises(EvoirError, match="changed the network's output on example_input"):
        evoir.grow(model, optimizer, Breaking(), example_input=x)
    new, _ = evoir.grow(model, optimizer, Breaking(), example_input=x, check=False)
    assert not torch.allclose(new(x), model(x))


# ---- a user's mistakes: one sentence each -----------------------------------------------------


MISTAKES = {
    "unsupported optimizer": (
        lambda m: (m, torch.optim.RMSprop(m.parameters()), "widen", {}),
        "not torch.optim.rmsprop.RMSprop",
    ),
    "module evoir cannot import": (
        lambda m: (Unsupported(), None, "widen", {}),  # a module with an op evoir lacks
        "evoir.grow cannot import Unsupported: cannot import aten.layer_norm.default (node 'layer_norm' (in module 'norm'",
    ),
    "unknown op": (lambda m: (m, None, "widenn", {}), "unknown op 'widenn'"),
    "unknown option": (lambda m: (m, None, "widen", {"width": 3}), "option 'width' does not apply to widen"),
    "bad option value": (lambda m: (m, None, "widen", {"kernel": "big"}), "widen: option 'kernel'"),
    "bad site": (lambda m: (m, None, "widen", {"at": "nowhere"}), "nowhere"),
    "site of the wrong kind": (lambda m: (m, None, "net2wider", {"at": "add"}), "'add' is a add"),
    "random with pass options": (
        lambda m: (m, None, "random", {"channels": 4}),
        "takes seed and tau, not channels",
    ),
    "alter-lr": (lambda m: (m, None, "alter-lr", {}), "change the optimiser's lr instead"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistakes_are_one_sentence_evoir_errors(mistake):
    build, message = MISTAKES[mistake]
    module, optimizer, op, options = build(Tiny())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(EvoirError) as err:
        evoir.grow(module, optimizer, op, example_input=x, **options)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "example_input, message",
    [
        (torch.randn(2, 1, 8, 8), "example_input of shape (2, 1, 8, 8) does not fit Tiny:"),
        (torch.randn(8), "example_input must be a batch of the data"),
        ("images", "example_input must be a batch of the data"),
    ],
)
def test_example_input_that_does_not_fit(example_input, message):
    with pytest.raises(EvoirError) as err:
        evoir.grow(Tiny(), None, "widen", example_input=example_input)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_import_evoir_loads_no_backend_until_grow_is_used():
    code = (
        "import sys, evoir\n"
        "assert not [m for m in sys.modules if m.startswith(('evoir.backends', 'evoir.passes'))]\n"
        "evoir.grow\n"
        "assert 'evoir.backends.torch_fx.grow' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
