"""Loss and accuracy of a model at points theta + a * d1 (+ b * d2), batched on the device.

BatchNorm is evaluated either with the saved running statistics (`running`, eval mode) or with statistics of
each block of examples as in training (`batch`, train mode; running statistics are restored afterwards).
The parameters and buffers are restored bit for bit when the evaluation ends, also after an error.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F


@contextmanager
def preserved(model):
    """Restore every parameter, buffer and the train/eval mode on exit."""
    state = {key: value.detach().clone() for key, value in model.state_dict(keep_vars=True).items()}
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                value.copy_(state[key])
        model.train(training)


@torch.no_grad()
def loss_and_accuracy(model, images, labels, prepare, batch_size, bn_mode="batch", loss_fn=None):
    """Mean loss and accuracy over (images, labels) in blocks of `batch_size` (accuracy is NaN for regression)."""
    model.train(bn_mode == "batch")
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        outputs = model(prepare(images[start:start + batch_size])).float()
        targets = labels[start:start + batch_size]
        if loss_fn is None:
            loss_sum += F.cross_entropy(outputs, targets, reduction="sum").item()
            correct += (outputs.argmax(dim=1) == targets).sum().item()
        else:
            loss_sum += loss_fn(outputs, targets).item() * len(targets)
    accuracy = correct / len(labels) if loss_fn is None else float("nan")
    return loss_sum / len(labels), accuracy


def evaluate_grid(model, directions, coordinates, datasets, prepare, batch_size, bn_mode="batch", loss_fn=None,
                  after_point=None):
    """For each point (one coefficient per direction) and each named dataset, (loss, accuracy); `after_point`,
    if given, is called after each point (progress reports).

    Returns {name: array of shape (points, 2)}; the model is unchanged afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    results = {name: [] for name in datasets}
    with preserved(model):
        origin = [p.detach().clone() for p in params]
        for point in coordinates:
            with torch.no_grad():
                for param, start, *parts in zip(params, origin, *directions):
                    param.copy_(start)
                    for coefficient, part in zip(point, parts):
                        param.add_(part, alpha=float(coefficient))
            for name, (images, labels) in datasets.items():
                with preserved(model):  # batch-mode forwards must not move the running statistics
                    results[name].append(loss_and_accuracy(model, images, labels, prepare, batch_size, bn_mode,
                                                           loss_fn))
            if after_point is not None:
                after_point(point)
    return {name: torch.tensor(values, dtype=torch.float64).numpy() for name, values in results.items()}
