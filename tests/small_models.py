"""Small versions of every template, shared by the tests that evolve them."""

from __future__ import annotations

from evoir.templates import EraConfig, era, gpt, mlp, painter_base, resnet, vit

SMALL_STARTS = {
    "painter-base": lambda seed=0: painter_base(input_shape=(3, 16, 16), width=8, seed=seed),
    "resnet": lambda seed=0: resnet(input_shape=(3, 16, 16), depth=8, width=4, seed=seed),
    "era": lambda seed=0: era(
        input_shape=(3, 16, 16),
        seed=seed,
        config=EraConfig("bottleneck", (1, 1, 1, 1), filters=4, filter_update=2, group_size=2),
    ),
    "mlp": lambda seed=0: mlp(input_shape=(1, 8, 8), hidden=12, seed=seed),
    "vit": lambda seed=0: vit(input_shape=(3, 8, 8), patch=4, width=8, heads=2, depth=1, seed=seed),
    "gpt": lambda seed=0: gpt(input_shape=(6,), classes=9, width=8, heads=2, depth=1, seed=seed),
}
"""Template name → ``build(seed=0) -> (graph, store)`` at test size (16×16 images)."""
