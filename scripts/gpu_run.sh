#!/usr/bin/env bash
# Every GPU figure in one call of at most ~9 minutes, for a lent H100 / H200 with no network:
#
#   bash scripts/gpu_run.sh            # on the GPU machine, from the repository root
#   DRY_RUN=1 bash scripts/gpu_run.sh  # the same phases end to end on a CPU with the tiny model
#
# It uses the machine's own torch and transformers. What corl needs beyond them comes from the wheelhouse
# carried in the checkout (WHEELS, default wheelhouse/: `make wheelhouse WHEELHOUSE_LEAVE_OUT="pycocoevalcap
# lightning peft tensorboard accelerate timm"` beforehand, ~3.4 MiB), installed into .offline-site when
# an import is missing. Phases, each in a process of its own under its own timeout (seconds):
#   env 20          the machine, the GPU, the versions
#   install 60      the wheelhouse, if anything is missing
#   consistency 60  sampling vs training log-prob gaps, fp32 and bf16
#   rollout 200     Janus-Pro-1B's shape, random bf16 weights, 2 prompts x G 8, 576 image tokens with CFG,
#                   answers of 64 (with transformers' generate) and 512 tokens: eager, captured, ms per decode
#                   step and the fraction of the bandwidth roofline
#   step 160        two stage-1 steps at the paper's per-GPU shape, one device: time per phase, peak memory,
#                   first-pass ratio range (old_logps: rollout), decode counters
#   fsdp 100        one stage-1 step under FullyShardedStrategy on one device
# Everything goes to $OUT (default runs/gpu_run), and all figures into $OUT/gpu_run.json, printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_run}
WHEELS=${WHEELS:-wheelhouse}
PY=${PY:-python3}
DRY_RUN=${DRY_RUN:-0}
export OUT
mkdir -p "$OUT"
rm -f "$OUT"/phases.jsonl
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ "$DRY_RUN" = 1 ]; then  # the tiny model on the CPU: every phase, seconds each
  MODEL=tiny DEVICE=cpu DTYPE=float32 PROMPTS=1 GROUP=2 SHORT=4 LONG=8 STEPS=1 ANSWERS=8 LPIPS=64
  SLACK=4  # the limits budget a GPU's minutes; a busy CPU (a test suite beside it) may need four times them
else
  MODEL=random:janus-pro-1b DEVICE=cuda DTYPE=bfloat16 PROMPTS=2 GROUP=8 SHORT=64 LONG=512 STEPS=2 ANSWERS=512 LPIPS=224
  SLACK=1
fi

phase() {  # phase NAME SECONDS COMMAND...: run it under its timeout, log it, record its outcome
  local name=$1 limit=$(($2 * SLACK))
  shift 2
  local start=$SECONDS rc
  echo "== $name (at most ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -n 5 "$OUT/$name.log"
  printf '{"phase": "%s", "rc": %d, "timed_out": %s, "seconds": %d}\n' "$name" "$rc" \
    "$([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false)" "$((SECONDS - start))" >> "$OUT/phases.jsonl"
}

phase env 20 "$PY" - <<'EOF'
import json, os, platform, subprocess, sys
import torch, transformers
info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "transformers": transformers.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
             "gpus": torch.cuda.device_count()}
for name in ("lightning", "peft", "jsonargparse", "torchdata", "lpips", "math_verify"):
    try:
        info[name] = __import__(name).__version__
    except Exception as err:  # noqa: BLE001
        info[name] = f"missing ({type(err).__name__})"
print(json.dumps(info))
json.dump(info, open(os.path.join(os.environ.get("OUT", "runs/gpu_run"), "env.json"), "w"), indent=2)
EOF

if ! "$PY" -c "import jsonargparse, torchdata, lpips, math_verify, lightning" 2> /dev/null; then
  phase install 60 "$PY" scripts/wheelhouse.py install "$WHEELS" --target .offline-site
  export PYTHONPATH="$PWD:$PWD/.offline-site${PYTHONPATH#"$PWD"}"
fi

phase consistency 60 "$PY" scripts/gpu_check.py consistency --json "$OUT/consistency.json"
phase rollout 200 "$PY" benchmarks/rollout.py --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
  --prompts "$PROMPTS" --group-size "$GROUP" --answer-tokens "$SHORT" --longer-answers "$LONG" --repeats 1 \
  --json "$OUT/rollout.json"
phase step 160 "$PY" scripts/gpu_check.py train --strategy single --path fast --model "$MODEL" --steps "$STEPS" \
  --prompts "$PROMPTS" --group-size "$GROUP" --answer-tokens "$ANSWERS" --lpips-resolution "$LPIPS" \
  --json "$OUT/step.json"
phase fsdp 100 "$PY" scripts/gpu_check.py train --strategy fsdp --path fast --model "$MODEL" --steps 1 \
  --prompts "$PROMPTS" --group-size "$GROUP" --answer-tokens "$ANSWERS" --lpips-resolution "$LPIPS" \
  --json "$OUT/fsdp.json"

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
report = {"phases": [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]}
for name in ("env", "consistency", "rollout", "step", "fsdp"):
    path = out / f"{name}.json"
    report[name] = json.loads(path.read_text()) if path.is_file() else None
(out / "gpu_run.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
EOF
