#!/usr/bin/env bash
# The paper's experiments (ResNet-18, CIFAR-10), one run per line; the comment names the row of its table.
# Each run writes outputs/<name>/... and a row to tables/CIFAR10_resnet18.csv in the current folder.
#
#   bash train.sh                               # every run, one after the other
#   bash train.sh --list                        # print the commands, run nothing (one sbatch per line, say)
#   bash train.sh --only fbaug_clip,noaug_sgd   # only these runs (their name=)
#   bash train.sh dryrun=True data.path=/data   # extra overrides reach every run
#
# A run that fails is reported at the end (exit 1); a preempted one (exit 4) stops the script with 4, and the
# same command continues: finished runs only report again, the stopped one resumes from its checkpoint.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list=false
only=""
extra=()
while (($#)); do
  case "$1" in
    --list) list=true ;;
    --only) only="${2:?--only needs NAME[,NAME]}"; shift ;;
    --only=*) only="${1#--only=}" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "train.sh: unknown option $1 (allowed: --list, --only NAME[,NAME], overrides)" >&2; exit 2 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
if [[ -n "$only" ]]; then
  known=",$(grep -o '^train name=[^ ]*' "$0" | cut -d= -f2 | paste -sd, -),"
  for wanted in ${only//,/ }; do
    [[ "$known" == *",$wanted,"* ]] || { echo "train.sh: --only $wanted names no run; runs: ${known:1:-1}" >&2; exit 2; }
  done
fi
failed=()
train() {
  local name="${1#name=}"
  [[ -z "$only" || ",$only," == *",$name,"* ]] || return 0
  local command=(python "${here}/train_with_gradient_descent.py" "$@" ${extra[@]+"${extra[@]}"})
  if $list; then
    printf '%q ' "${command[@]}" | sed 's/ $//'
    echo
    return 0
  fi
  local code=0
  "${command[@]}" || code=$?
  if ((code == 4)); then echo "train.sh: $name was preempted; run the same command again" >&2; exit 4; fi
  if ((code != 0)); then failed+=("$name (exit $code)"); fi
}

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

if ((${#failed[@]})); then
  printf 'train.sh: %s failed\n' "${failed[@]}" >&2
  exit 1
fi
