"""The configuration of a search run, saved as ``config.json`` in the run folder."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evoir.errors import EvoirError

from .text import is_text

if TYPE_CHECKING:
    from evoir.graph import Graph

Strategy = Literal[
    "ne",
    "tournament",
    "evolution",
    "regularized",
    "crossover",
    "random",
    "local",
    "bayes",
    "speciation",
    "independent",
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# The recipe's choices, named once: the config validates them, the trainer's modules type
# their settings with them, the CLI offers them.
OptimizerKind = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerKind)
ScheduleKind = Literal["constant", "cosine", "onecycle"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleKind)
ScheduleScope = Literal["run", "generation"]
SCHEDULE_SCOPES: tuple[str, ...] = get_args(ScheduleScope)
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
PRESERVING_OPS = ("widen", "deepen", "inception", "net2wider", "net2deeper")
# A transformer's mutations (a network with attention): heads, MLP units, blocks, every width.
TRANSFORMER_OPS = ("add-heads", "widen", "deepen", "widen-model")
# Strategies that search a space of architectures (the IR under Real et al.'s mutations,
# ERA's 8 parameters, NAS-Bench-201's cells) and which spaces each can work in; the first is
# the default.
SPACES: dict[str, tuple[str, ...]] = {
    "tournament": ("ir", "era", "nb201"),
    "evolution": ("era", "ir", "nb201"),
    "regularized": ("era", "ir", "nb201"),
    "crossover": ("era", "nb201"),
    "random": ("era", "nb201"),
    "local": ("era", "nb201"),
    "bayes": ("era", "nb201"),
}
TABLE_PREFIX = "table:"


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunOptions(_Options):
    """What every run has: the strategy, the data, the population's size, the schedule of
    generations, how members are selected, the seed, the device, the workers and the budget."""

    strategy: Strategy = "ne"
    space: Literal["era", "ir", "nb201"] | None = Field(
        None, description="None: the strategy's default space"
    )
    fidelity: str = Field(
        "train",
        description="how a candidate is evaluated: train (train it, then validate), or "
        "table:PATH (look its validation accuracy up in a NAS-Bench-201 CSV; table.py)",
    )
    dataset: str = Field(
        "synthetic",
        description="a built-in set, or imagefolder:PATH, npz:FILE, torchvision:NAME, MODULE:ATTR "
        "(search/sources/), or text: tinyshakespeare, text:FILE (search/text.py); a path is "
        "recorded absolute",
    )
    context: int | None = Field(
        None, ge=1, description="text: characters per window (None: the start model's, else 64)"
    )
    data_dir: str | None = None
    val_size: int | None = None
    val_fraction: float | None = Field(
        None, gt=0, lt=1, description="validation split off the training set where the data has none"
    )
    test_fraction: float | None = Field(
        None, gt=0, lt=1, description="test split off the training set where a user's data has none"
    )
    image_size: int | None = Field(None, ge=1, description="resize images to S×S (None: their own size)")
    input_shape: tuple[int, ...] | None = Field(
        None, description="recorded when the run starts: the data's (channels, height, width), or (context,)"
    )
    classes: int | None = Field(None, ge=1, description="recorded when the run starts: the data's classes")
    vocab: str | None = Field(
        None, description="recorded when a text run starts: its characters, in token-id order"
    )
    examples: tuple[int, int, int] | None = Field(
        None, description="recorded when the run starts: train/val/test examples; a resume checks all three"
    )
    start: str | None = Field(None, description="None: the strategy's default start network")
    population: int = Field(10, ge=1, description="M: members after mutation")
    keep: int = Field(3, ge=1, description="K: members kept by selection")
    generations: int = Field(15, ge=0)
    initial_steps: int = Field(5000, ge=0, description="N_i")
    steps: int = Field(5000, ge=0, description="N_j: joint-training steps per generation")
    selection: Literal["topk", "coevolution"] = "topk"
    coevolution_decay: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    device: str = Field("auto", description="auto: CUDA where available (one GPU per worker), else the CPU")
    workers: int | None = Field(
        None, ge=1, description="parallel Ray workers (--workers); None: the search runs in this process"
    )
    worker_merge: Literal["sum", "mean"] = Field(
        "mean",
        description="how NE merges the workers' changes to a shared tensor: the sum or the mean of "
        "their deltas (workers/generation.py)",
    )
    budget_s: float | None = Field(None, gt=0)
    tensorboard: bool = Field(False, description="TensorBoard scalars in RUN/tensorboard/ (tensorboard.py)")


class RecipeOptions(_Options):
    """How the trainer trains and evaluates (``trainer.TrainSettings``)."""

    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(64, ge=1, description="64: fastest per image on a CPU (bench.layout_speed)")
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    optimizer: OptimizerKind = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's momentum")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum")
    schedule: ScheduleKind = "constant"
    warmup: float = Field(0.0, ge=0, lt=1, description="the schedule's warm-up, a fraction of its steps")
    schedule_scope: ScheduleScope = Field(
        "run",
        description="what one schedule spans in a generational search: every step of the run, or "
        "each generation's training (schedule.py); a steady-state candidate's spans its training",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="the largest gradient norm of a step")
    precision: Precision = Field("fp32", description="bf16: forward pass under autocast")
    augment: bool = False
    stack_members: bool | None = Field(
        None,
        description="train and evaluate members of one architecture as one batched call; None: "
        "dense members on a GPU, never on a CPU (measured no faster there; see search/stacked.py)",
    )
    channels_last: bool | None = Field(
        None,
        description="image inputs in NHWC order; None: for networks with convolutions (bench.layout_speed)",
    )


class NEOptions(_Options):
    """Painter's NE: the mutations, their zero blocks, the learning-rate rule."""

    tau: float | None = Field(None, gt=0, lt=1, description="locality bound |θ_old|/|θ_new| > τ")
    ops: tuple[str, ...] | None = Field(
        None,
        description="the passes mutations draw from; None: TRANSFORMER_OPS for a network with "
        "attention, else PRESERVING_OPS",
    )
    init: Literal["pair", "zero-out"] | None = Field(
        None, description="zero blocks' init for widen/deepen/inception (None: the passes' default)"
    )
    scale: Literal["matched", "he"] | None = Field(
        None, description="zero blocks' weight scale (None: the passes' default)"
    )
    lr_rule: bool = Field(True, description="rescale a child's lr and weight decay by |θ_parent|/|θ_child|")


class EraOptions(_Options):
    """ERA's space, capped for small machines."""

    era_max_blocks: int = Field(18, ge=1, le=18, description="cap on ERA's blocks per section")
    era_max_filters: int = Field(64, ge=1, le=64, description="cap on ERA's initial filters")


class SpeciationOptions(_Options):
    """Baughman & Wozniak's merges and re-seeding."""

    merge: Literal["mean", "random"] = "mean"
    reseed_noise: float = Field(
        0.01, ge=0, description="σ of the re-seeding noise, relative to each tensor's RMS"
    )


class SearchConfig(SpeciationOptions, EraOptions, NEOptions, RecipeOptions, RunOptions):
    """Every option of a run, one flat JSON object (``config.json``): each group above is the
    typed view a part or a strategy reads (a strategy is given its own group, the trainer the
    recipe). Defaults follow the report's App. D (Adam, lr 0.003, weight decay 1e-6, K = 3,
    M = 10, 15 generations) with N_i = N_j = 5000 steps."""

    @model_validator(mode="after")
    def _check(self):
        if self.keep > self.population:
            raise ValueError(f"--keep K={self.keep} must not exceed --population M={self.population}")
        if self.space is not None:
            allowed = SPACES.get(self.strategy, ())
            if self.space not in allowed:
                where = f"only in {', '.join(allowed)}" if allowed else "in no --space (it has its own)"
                raise ValueError(f"--strategy {self.strategy} searches {where}, not --space {self.space}")
        if is_text(self.dataset) and self.augment:
            raise ValueError("--augment crops and flips images; text has none to augment")
        if self.context is not None and not is_text(self.dataset):
            raise ValueError(f"--context is for text data; {self.dataset} is images")
        if self.strategy == "speciation" and self.keep < 2:
            raise ValueError("--strategy speciation merges pairs: --keep must be at least 2")
        if self.fidelity != "train" and not (self.fidelity.startswith(TABLE_PREFIX) and self.table):
            raise ValueError(f"--fidelity {self.fidelity!r}: expected train or table:PATH")
        if self.table is not None:
            if self.search_space != "nb201":
                raise ValueError("--fidelity table: looks up NAS-Bench-201's cells: give --space nb201")
            if self.workers is not None:
                raise ValueError("--fidelity table: a look-up needs no workers; drop --workers")
            if self.selection == "coevolution":
                raise ValueError("--selection coevolution needs per-example results; a table has none")
        return self

    @classmethod
    def checked(cls, **options) -> SearchConfig:
        """The configuration of ``options``; a value a user gave wrong is one ``EvoirError``
        (the first of pydantic's messages)."""
        try:
            return cls(**options)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = first["msg"].removeprefix("Value error, ")
            raise EvoirError(f"--{where.replace('_', '-')}: {message}" if where else message) from None

    @property
    def table(self) -> str | None:
        """The table's path when evaluations are look-ups (``--fidelity table:PATH``)."""
        if self.fidelity.startswith(TABLE_PREFIX):
            return self.fidelity.removeprefix(TABLE_PREFIX) or None
        return None

    @property
    def start_network(self) -> str | None:
        """The initial network: ``--start``, else the strategy's own (None: ERA decodes its
        candidates itself)."""
        if self.start is not None:
            return self.start
        if is_text(self.dataset):
            return "gpt"
        if self.search_space in ("era", "nb201"):
            return None
        if self.search_space == "ir":
            return "minimal"  # Real et al.: single layer, no convolution
        if self.strategy in ("speciation", "independent"):
            return "mlp"  # Baughman & Wozniak's two-layer dense network
        return "painter-base"

    @property
    def search_space(self) -> str | None:
        """The space the strategy searches (``era``, ``nb201`` or ``ir``), None for NE and
        speciation."""
        return self.space or SPACES.get(self.strategy, (None,))[0]


def mutation_ops(graph: Graph) -> tuple[str, ...]:
    """The passes a mutation of ``graph`` draws from when ``ops`` is not given: a
    transformer's (``TRANSFORMER_OPS``) for a network with attention, else Painter's."""
    return TRANSFORMER_OPS if any(n.op == "attention" for n in graph.nodes) else PRESERVING_OPS


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` where torch sees a GPU, else ``cpu``; anything else as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def parse_budget(text: str | None) -> float | None:
    """``90s``, ``30m``, ``2h`` or plain seconds → seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise EvoirError(f"budget {text!r}: expected a duration like 90s, 30m or 2h")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if value <= 0:
        raise EvoirError("budget must be positive")
    return value
