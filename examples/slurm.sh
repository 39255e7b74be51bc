#!/bin/bash
# seemore on a SLURM cluster: 2 nodes x 4 GPUs, one torchrun per node.
#   sbatch examples/slurm.sh
# The global batch (train.batch_size) is split over the 8 processes and train.grad_accum.
#SBATCH --job-name=seemore
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

srun torchrun \
    --nnodes="$SLURM_NNODES" --nproc_per_node=4 \
    --rdzv_backend=c10d --rdzv_endpoint="$head_node:29500" --rdzv_id="$SLURM_JOB_ID" \
    -m seemore train --preset default --out "runs/slurm-$SLURM_JOB_ID" --no-progress \
    train.batch_size=256 train.checkpoint_every=200 "$@"
