"""How much of the regularizer's H v survives reduced precision, on one block of your model and data.

A forward difference shifts each weight by about eps / sqrt(#parameters), far below one rounding step of bf16
and often of TF32. This measures, for one block, the error of (lr/4) H v against the same forward difference in
float64, for each combination of training-pass precision and `GradRegularizer(precision=...)`, and how much of
the intended weight shift survives rounding the weights to TF32 and bf16.

    python -m fullbatch.analysis.regularizer_precision --cifar-root ~/data --model resnet18 --width 64 --block 32

On CUDA the float32 rows run with PyTorch's TF32 settings as they are, so they show the effect on your GPU.
"""
import argparse
import copy
import time
import warnings

import torch

from fullbatch.config.paths import compose_config
from fullbatch.data.cifar import load_cifar
from fullbatch.data.synthetic import make_synthetic
from fullbatch.models.registry import build_model
from fullbatch.training.regularizer import GradRegularizer

BLOCK_STRENGTH = 0.5  # the paper's, so v = 0.5 g


def flat(tensors):
    return torch.cat([t.flatten().double() for t in tensors])


def load_block(cifar_root, block, seed):
    """`block` CIFAR-10 training images (or synthetic ones without a root), normalised, with their labels."""
    if cifar_root:
        (images, labels), _ = load_cifar("CIFAR10", cifar_root, download=False)
    else:
        (images, labels), _ = make_synthetic(block, 1, 10, seed)
    images, labels = torch.as_tensor(images[:block]), torch.as_tensor(labels[:block])
    cifar10 = compose_config(["data=CIFAR10"]).data  # the training set's normalisation, as training uses it
    mean, std = torch.tensor(list(cifar10.mean)).view(1, 3, 1, 1), torch.tensor(list(cifar10.std)).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std, labels.long()


def block_gradient(model, inputs, labels, loss_fn, bf16):
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn(model(inputs), labels)
    return [g.detach().clone() for g in torch.autograd.grad(loss, list(model.parameters()))]


def correction(model, grads, inputs, labels, loss_fn, bf16, precision, eps, repeats=3):
    """(lr/4) H v for v = BLOCK_STRENGTH * g as one flat float64 vector, and the median seconds per call."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regularizer = GradRegularizer(model, optimizer, loss_fn, BLOCK_STRENGTH, eps=eps, mixed_precision=bf16,
                                      precision=precision)
    times = []
    for _ in range(repeats):
        if inputs.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = regularizer([g.clone() for g in grads], inputs, labels)
        if inputs.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return flat(result) - flat(grads), sorted(times)[len(times) // 2]


def round_mantissa(values, bits):
    """Round float32 values to `bits` explicit mantissa bits, nearest-even (TF32: 10, bf16: 7)."""
    drop = 23 - bits
    if drop <= 0:
        return values.float()
    raw = values.float().contiguous().view(torch.int32)
    bias = (1 << (drop - 1)) - 1 + ((raw >> drop) & 1)
    return ((raw + bias) & ~((1 << drop) - 1)).view(torch.float32)


def surviving_shift(model, grads, eps, bits):
    """Fraction of conv/linear weights whose rounded value moves, and the error of the shift that arrives."""
    step = eps / (BLOCK_STRENGTH * flat(grads).norm())  # as the regularizer scales v = BLOCK_STRENGTH * g
    weights, shift = zip(*[(p.detach(), BLOCK_STRENGTH * step * g) for p, g in zip(model.parameters(), grads)
                           if p.dim() > 1])
    weights, shift = flat(weights).float(), flat(shift).float()
    arrived = round_mantissa(weights + shift, bits) - round_mantissa(weights, bits)
    moved = (arrived != 0).float().mean().item()
    return moved, ((arrived - shift).double().norm() / shift.double().norm()).item()


def measure(args):
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    inputs, labels = load_block(args.cifar_root, args.block, args.seed)
    inputs, labels = inputs.to(device), labels.to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    model = build_model(args.model, args.width, 10).to(device).train()

    reference_model = copy.deepcopy(model).double()
    reference_grads = block_gradient(reference_model, inputs.double(), labels, loss_fn, bf16=False)
    reference, _ = correction(reference_model, reference_grads, inputs.double(), labels, loss_fn, False, "full",
                              args.eps, repeats=1)
    grads32 = block_gradient(model, inputs, labels, loss_fn, bf16=False)
    grads16 = block_gradient(model, inputs, labels, loss_fn, bf16=True)
    flat32, flat16 = flat(grads32), flat(grads16)
    rows = []
    for label, grads, bf16, precision in [("float32", grads32, False, "full"), ("float32", grads32, False, "compute"),
                                          ("bf16", grads16, True, "compute"), ("bf16", grads16, True, "full")]:
        result, seconds = correction(model, grads, inputs, labels, loss_fn, bf16, precision, args.eps)
        rows.append(dict(training_pass=label, precision=precision, seconds=seconds,
                         error=((result - reference).norm() / reference.norm()).item(),
                         cosine=torch.nn.functional.cosine_similarity(result, reference, dim=0).item()))
    shifts = {name: surviving_shift(model, grads32, args.eps, bits) for name, bits in (("TF32", 10), ("bf16", 7))}
    return dict(gradient_difference=((flat16 - flat32).norm() / flat32.norm()).item(), rows=rows, shifts=shifts)


def report(result, args):
    print(f"{args.model} width {args.width}, block of {args.block} "
          f"{'CIFAR-10' if args.cifar_root else 'synthetic'} images, eps {args.eps:g}, {args.device}")
    print(f"bf16 block gradient differs from the float32 one by {result['gradient_difference']:.3f} (relative)")
    print("\n| training pass | regularizer precision | error vs float64 | cosine | s per call |\n|---|---|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['training_pass']} | {row['precision']} | {row['error']:.3f} | {row['cosine']:.3f} | "
              f"{row['seconds']:.3f} |")
    print()
    for name, (moved, error) in result["shifts"].items():
        print(f"{name}: {moved:.1%} of conv/linear weights move when rounded; the shift that arrives is off by "
              f"{error:.0%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar-root", help="folder holding cifar-10-batches-py/ (default: synthetic images)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--eps", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    result = measure(args)
    report(result, args)
    return result


if __name__ == "__main__":
    main()
