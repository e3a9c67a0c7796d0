"""Validation: loss and accuracy over the whole validation set, in eval mode, optionally with flips."""
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, images, labels, prepare, batch_size, autocast=None, flips=False):
    """Return (mean cross-entropy, accuracy) as device tensors; `flips` averages the probabilities of x and its mirror."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
    correct = torch.zeros((), device=labels.device, dtype=torch.int64)
    for start in range(0, len(labels), batch_size):
        inputs, targets = prepare(images[start:start + batch_size]), labels[start:start + batch_size]
        with (autocast() if autocast else nullcontext()):
            log_probs = F.log_softmax(model(inputs).float(), dim=1)
            if flips:
                mirrored = F.log_softmax(model(inputs.flip(3)).float(), dim=1)
                log_probs = torch.logaddexp(log_probs, mirrored) - math.log(2.0)
        loss_sum += F.nll_loss(log_probs, targets, reduction="sum").double()
        correct += (log_probs.argmax(dim=1) == targets).sum()
    model.train(was_training)
    return loss_sum / len(labels), correct.double() / len(labels)
