#!/usr/bin/env bash
# Distributed training on a SLURM cluster: srun starts one process per GPU (or per CPU task) and
# mmengine's 'slurm' launcher reads the ranks from SLURM_PROCID / SLURM_NTASKS / SLURM_NODELIST.
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args...]
# Environment: GPUS (processes in all, default 8), GPUS_PER_NODE (default 8; 0 for CPU nodes:
# no --gres, gloo), TASKS_PER_NODE (default GPUS_PER_NODE; on CPU nodes GPUS), CPUS_PER_TASK
# (default 5), SRUN_ARGS (more srun options), MASTER_PORT
# (default 29500), PYTHON (default .venv/bin/python).
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh gpu fgd configs/fgd_retinanet.py --amp
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python
GRES=()
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  GRES=(--gres="gpu:${GPUS_PER_NODE}")
  TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS_PER_NODE}
else
  TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS}
fi
export MASTER_PORT="${MASTER_PORT:-29500}"
# shellcheck disable=SC2086  # SRUN_ARGS holds several options
exec srun -p "$PARTITION" --job-name="$JOB_NAME" "${GRES[@]}" \
  --ntasks="$GPUS" --ntasks-per-node="$TASKS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
