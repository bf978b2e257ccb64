"""Per-example clipping for the head adapter in closed form, without per-example gradients.

For a linear layer on one vector per record, record i's gradient of its cross-entropy is the
outer product e_i [x_i, 1]^T, with e_i = w_i (softmax(logits_i) - onehot(y_i)) and w_i its class
weight. Its norm is therefore |e_i| * sqrt(|x_i|^2 + 1), and the sum of the clipped gradients
is one matrix product, (c * E)^T X: the same clipping that Opacus' hooks compute (flat, over
weight and bias together, factor min(1, C / (norm + 1e-6))), without materialising a
batch x labels x features tensor. That tensor was 90 % of a DP step's time on a CPU
(docs/benchmarks.md, "DP step time"). tests/client/dp/test_head_clipping.py checks the two
agree on real batches.
"""

from __future__ import annotations

import torch

from fedseal.client.training import FeatureInputs, TrainingInputs
from fedseal.models.features import FeatureHead

__all__ = ["ClippedSum", "clipped_head_gradient_sum", "has_closed_form"]

_OPACUS_EPSILON = 1e-6
"""What Opacus adds to a per-example norm before dividing the clip by it."""


class ClippedSum:
    """The sum over a batch of the per-example gradients, each clipped to norm `clip`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mean_loss: float) -> None:
        self.weight = weight
        self.bias = bias
        self.mean_loss = mean_loss


def has_closed_form(model: torch.nn.Module, inputs: TrainingInputs) -> bool:
    """True for the head adapter on cached embeddings with both of its tensors trainable."""
    if not isinstance(model, FeatureHead) or not isinstance(inputs, FeatureInputs):
        return False
    layer = model.classifier
    return bool(layer.weight.requires_grad and layer.bias.requires_grad)


def clipped_head_gradient_sum(
    head: FeatureHead,
    inputs: FeatureInputs,
    index: torch.Tensor,
    device: torch.device,
    clip: float,
) -> ClippedSum:
    """Sum over `index` of each record's loss gradient, clipped to L2 norm `clip`."""
    layer = head.classifier
    with torch.no_grad():
        x = inputs.features[index].to(device)
        labels = inputs.labels[index].to(device)
        logits = layer(x)
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        error = torch.softmax(logits, dim=1)
        error[torch.arange(labels.numel(), device=device), labels] -= 1.0
        if inputs.class_weights is not None:
            weights = inputs.class_weights.to(device)[labels]
            error = error * weights[:, None]
            losses = losses * weights
        norms = error.norm(dim=1) * torch.sqrt((x * x).sum(dim=1) + 1.0)
        factors = (clip / (norms + _OPACUS_EPSILON)).clamp(max=1.0)
        scaled = error * factors[:, None]
        return ClippedSum(scaled.T @ x, scaled.sum(dim=0), float(losses.mean()))
