#!/usr/bin/env bash
# Launch one training run over several GPUs and nodes with torchrun (torch.distributed, NCCL).
#
# One node, all its GPUs:
#   torchrun --standalone --nproc_per_node=8 train_with_gradient_descent.py impl/setup=distributed hyp=gradreg
#
# Several nodes: run this script once on every node (by hand, or as `srun bash train_distributed_multinode.sh`
# inside a SLURM allocation), with the same arguments everywhere; extra arguments go to the training script:
#   NNODES=4 MASTER_ADDR=node001 bash train_distributed_multinode.sh name=fb_strong hyp=gradreg data.batch_size=32
# torchrun's c10d rendezvous on MASTER_ADDR:MASTER_PORT gathers the nodes; all ranks share one run folder
# (outputs/<name>/torchrun-<run id>), and only rank 0 writes metrics, checkpoints and tables. Re-running the
# same command with impl.checkpoint.resume=true continues from the newest checkpoint (same world size).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

NNODES=${NNODES:-${SLURM_NNODES:-1}}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
if [ "${GPUS_PER_NODE}" -lt 1 ]; then GPUS_PER_NODE=1; fi
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" 2>/dev/null | head -n 1 || hostname)}
MASTER_PORT=${MASTER_PORT:-29400}
RUN_ID=${RUN_ID:-${SLURM_JOB_ID:-fullbatch-$(date +%Y%m%d)}}

exec torchrun \
  --nnodes="${NNODES}" \
  --nproc_per_node="${GPUS_PER_NODE}" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="${MASTER_ADDR}:${MASTER_PORT}" \
  --rdzv_id="${RUN_ID}" \
  "${here}/train_with_gradient_descent.py" impl/setup=distributed "$@"
