"""The learning-rate rule of the report's App. C.3.

After a transformation takes f₁(x; θ₁) to f₂(x; θ₂), the learning rate becomes
α' = |θ₁| / |θ₂| · α (|·| counts parameters), so that updates keep a roughly constant
magnitude. The search engine applies the same factor to the weight decay.
"""

from __future__ import annotations


def rescale(value: float, parent_params: int, child_params: int) -> float:
    """α' = |θ_parent| / |θ_child| · α.

    Raises:
        ValueError: if a parameter count is not positive.
    """
    if parent_params <= 0 or child_params <= 0:
        raise ValueError(f"parameter counts must be positive, got {parent_params} and {child_params}")
    return value * parent_params / child_params


def rescale_hyperparameters(
    lr: float, weight_decay: float, parent_params: int, child_params: int
) -> tuple[float, float]:
    """The child's (learning rate, weight decay), both scaled by |θ_parent| / |θ_child|."""
    return rescale(lr, parent_params, child_params), rescale(weight_decay, parent_params, child_params)
