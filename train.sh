#!/usr/bin/env bash
# The paper's experiments (ResNet-18, CIFAR-10), one run per line; the comment names the row of its table.
# Each run writes outputs/<name>/... and appends a row to tables/CIFAR10_resnet18.csv in the current folder.
# Run single lines, or all: bash train.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
train() { python "${here}/train_with_gradient_descent.py" "$@"; }

## With random augmentation (crop + flip), freshly drawn every step
train name=baseline_sgd hyp=base_sgd                                              # Baseline SGD
train name=fbaug_1 hyp=fb1                                                        # Baseline FB
train name=fbaug_2 hyp=fb2                                                        # FB train longer
train name=fbaug_clip hyp=fbclip                                                  # FB clipped
train name=fbaug_gradreg_lr08 hyp=gradreg                                         # FB regularized
train name=fbaug_highreg_lr08 hyp=gradreg data.batch_size=32                      # FB strong reg.
train name=fbaug_highreg_lr08_shuffle hyp=gradreg data.batch_size=32 hyp.shuffle=True   # FB in practice

## Without augmentation: a fixed dataset
train name=noaug_sgd hyp=base_sgd data.augmentations_train=                       # Baseline SGD
train name=fb_noaug_1 hyp=fb1 data.augmentations_train=                           # Baseline FB
train name=fb_noaug_2 hyp=fb2 data.augmentations_train=                           # FB train longer
train name=fb_noaug_clip hyp=fbclip data.augmentations_train=                     # FB clipped
train name=fb_noaug_gradreg_lr08 hyp=gradreg data.augmentations_train=            # FB regularized
train name=fb_noaug_highreg_lr08 hyp=gradreg data.batch_size=32 data.augmentations_train=   # FB strong reg.

## N x CIFAR: rounds of augmented CIFAR-10 written once to an LMDB file (under ~/data/lmdb), then used as a
## fixed dataset with no further augmentation. The file is built by the first run that needs it.
train name=SGD_10_CIFAR hyp=base_sgd data/db=LMDB data.db.rounds=10 data.augmentations_train= hyp.train_semi_stochastic=True  # Baseline SGD
train name=fb_10_1 hyp=fb1 data/db=LMDB data.db.rounds=10 data.augmentations_train=                  # Baseline FB
train name=fb_10_2 hyp=fb2 data/db=LMDB data.db.rounds=10 data.augmentations_train=                  # FB train longer
train name=fb_10_clip hyp=fbclip data/db=LMDB data.db.rounds=10 data.augmentations_train=            # FB clipped
train name=fb_10_gradreg_lr08 hyp=gradreg data/db=LMDB data.db.rounds=10 data.augmentations_train=   # FB regularized
train name=fb_10_highreg_lr08 hyp=gradreg data/db=LMDB data.db.rounds=10 data.augmentations_train= data.batch_size=32  # FB strong reg.
train name=fb_40_gradreg_lr08 hyp=gradreg data/db=LMDB data.db.rounds=40 data.augmentations_train=   # FB regularized, 40 x CIFAR
