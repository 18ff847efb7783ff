#!/usr/bin/env bash
# Distributed training through torchrun and mmengine's 'pytorch' launcher.
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# NUM_PROCS processes per machine: one per GPU with CUDA (NCCL or the config's dist_cfg backend),
# else CPU processes with gloo. Several machines: set NNODES, NODE_RANK, MASTER_ADDR and
# MASTER_PORT on each, e.g. on 2 machines with 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on 10.0.0.1
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on the other
# train_dataloader.batch_size is per process: the global batch is NUM_PROCS x NNODES x batch_size.
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
