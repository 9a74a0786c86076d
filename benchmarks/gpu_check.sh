#!/usr/bin/env bash
# One-shot GPU check on a machine without fedray's dependencies installed: wheels carried
# in .whl/ (if any) go to /tmp/site, then what Ray and torch see, then
# benchmarks/gpu_fedfm.py (fractional-GPU LoRA clients, the ZeRO foundation model on
# NCCL, tokens/s against a plain peft loop). Usage: bash benchmarks/gpu_check.sh [ARGS]
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY'
import importlib, torch
print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None)
for name in ("ray", "deepspeed", "peft", "transformers", "omegaconf", "pyarrow", "cryptography", "opacus"):
    try:
        print(f"  {name} {importlib.import_module(name).__version__}")
    except Exception as err:  # noqa: BLE001  (a report, not a check)
        print(f"  {name} missing: {err}")
PY
[ -n "${SKIP_PINNING:-}" ] || python3 - <<'PY'
# Ray's GPU pinning with fractional GPUs: four 0.25-GPU actors share GPU 0, each sees it
import os, ray, torch
ray.init(address="local", include_dashboard=False, log_to_driver=False)
@ray.remote(num_gpus=0.25, num_cpus=1)
class Probe:
    def where(self):
        x = torch.ones(1024, 1024, device="cuda")
        return (ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count(),
                float((x @ x).sum()))
probes = [Probe.remote() for _ in range(4)]
print("fractional actors (gpu ids, CUDA_VISIBLE_DEVICES, devices, matmul):", ray.get([p.where.remote() for p in probes]))
ray.shutdown()
PY
timeout "${GPU_BENCH_TIMEOUT:-420}" python3 benchmarks/gpu_fedfm.py "$@" 2>&1 | grep -v -E "^\s*$|FutureWarning|warnings.warn" | tail -40
