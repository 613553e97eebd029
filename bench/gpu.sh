#!/usr/bin/env bash
# One-shot GPU check: every GPU figure the README lists as open, in one prepared run of at most
# 8 minutes, results as JSON.
#
#   bench/gpu.sh                      # on the device machine: results under $OUT (else out/gpu-check)
#   bench/gpu.sh --cpu --quick        # dry run on a CPU: every step on its short schedule (minutes)
#   bench/gpu.sh --reference DIR      # also run the reference DM2C (a jiangyangby/DM2C checkout) beside ours
#
# Steps, in priority order (each skipped cleanly when its bench script is missing, when a package
# it needs is absent, or when the time budget is spent; every step has its own time limit):
#   dm2c      bench/dm2c.py: the full faithful protocol, one seed (with --reference: and the reference)
#   kmeans-a  bench/kmeans.py --case a: DM2C's evaluation k-means (2,173 × 8, k = 10, 20 restarts)
#   kmeans-b  bench/kmeans.py --case b: 1,000,000 × 128, k = 100 (FAISS too where it imports)
#   reduce    bench/reduce.py: PCA 200,000 × 1,024 → 256, in memory and streamed from a store
#   embed     bench/embed.py: ViT-B-32 images/s on generated JPEGs (needs open_clip)
#   newer     the newer methods' benches, when present: bench/mvcln.py (MvCLN, SURE), bench/retrieval.py,
#             bench/map.py, bench/textspace.py, bench/sweep.py (the 30-cell sweep beside one solo seed)
#
# Packages the device machine lacks (open_clip and its needs, faiss-cpu) travel as wheels in the
# repo's ignored .whl/ folder (see the device notes: pip download --python-version 3.12 ...); when
# .whl/*.whl exist they are installed into /tmp/site first, otherwise the steps that need them are
# skipped. Output: $OUT/gpu.json (environment, every step's status, seconds, parsed results and the
# tail of its log) and $OUT/gpu.log (all logs); two files, well inside what comes back from $OUT.
set -u

cpu=0
quick=0
reference=""
budget=480
out="${OUT:-}"
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --quick) quick=1 ;;
    --reference) reference="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo" || exit 1
out="${out:-$repo/out/gpu-check}"
mkdir -p "$out"
work="$(mktemp -d /tmp/gpu-check.XXXXXX)"
log="$out/gpu.log"
: > "$log"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

say() { echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  say "installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
  if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$log" 2>&1; then
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  else
    say "wheel install failed (see the log); the steps that need them are skipped"
  fi
fi
export PYTHONPATH="$repo:${PYTHONPATH:-}"

if [ "$cpu" = 1 ]; then device=cpu; else device=cuda; fi
if [ "$device" = cuda ] && ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  say "no CUDA device visible; pass --cpu for a dry run on the CPU"
  exit 3
fi
has() { "$py" -c "import $1" >/dev/null 2>&1; }

start=$(date +%s)
steps_file="$work/steps.jsonl"
: > "$steps_file"

left() { echo $(( budget - ($(date +%s) - start) - 10 )); }  # seconds of the budget left for a step

# run_step NAME LIMIT_S JSON_OR_- CMD...: run CMD under `timeout`, within what is left of the budget
run_step() {
  local name="$1" limit="$2" json="$3"; shift 3
  local left rc t0 t1 status
  left=$(left)
  if [ "$left" -lt 20 ]; then
    say "$name: skipped (budget of ${budget}s spent)"
    printf '{"step": "%s", "status": "skipped", "reason": "budget spent"}\n' "$name" >> "$steps_file"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name: $* (limit ${limit}s)"
  t0=$(date +%s.%N)
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$work/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  cat "$work/$name.log" >> "$log"
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  say "$name: $status (exit $rc, $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s)"
  "$py" - "$name" "$status" "$rc" "$t0" "$t1" "$json" "$work/$name.log" "$*" >> "$steps_file" <<'EOF'
import json, sys
name, status, rc, t0, t1, path, logf, cmd = sys.argv[1:]
rec = {"step": name, "status": status, "exit": int(rc), "seconds": round(float(t1) - float(t0), 2), "command": cmd}
if path != "-":
    try:
        with open(path) as fh:
            rec["result"] = json.load(fh)
    except (OSError, ValueError) as e:
        rec["result_error"] = str(e)
with open(logf, errors="replace") as fh:
    rec["log_tail"] = fh.read()[-4000:]
print(json.dumps(rec))
EOF
}

skip() {
  say "$1: skipped ($2)"
  printf '{"step": "%s", "status": "skipped", "reason": "%s"}\n' "$1" "$2" >> "$steps_file"
}

bench() { [ -f "bench/$1" ]; }

# -- dm2c ------------------------------------------------------------------------------------------
if bench dm2c.py; then
  args=(bench/dm2c.py --device "$device" --work "$work/dm2c" --out "$work/dm2c.json")
  [ "$quick" = 1 ] && args+=(--quick)
  if [ -n "$reference" ]; then
    if [ -f "$reference/code/model.py" ]; then args+=(--reference "$reference"); else say "dm2c: --reference $reference has no code/model.py; ours only"; fi
  fi
  lim=150; [ -n "$reference" ] && lim=420
  run_step dm2c "$lim" "$work/dm2c.json" "$py" "${args[@]}"
else
  skip dm2c "bench/dm2c.py missing"
fi

# -- k-means ---------------------------------------------------------------------------------------
if bench kmeans.py; then
  if [ "$quick" = 1 ]; then
    run_step kmeans-a 90 "$work/kmeans-a.json" "$py" bench/kmeans.py --device "$device" --case a --repeats 1 --threads 1 --methods ours,auto,sklearn --json "$work/kmeans-a.json"
    run_step kmeans-b 90 "$work/kmeans-b.json" "$py" bench/kmeans.py --device "$device" --case b --quick --repeats 1 --threads 1 --methods ours,auto,sklearn --json "$work/kmeans-b.json"
  else
    run_step kmeans-a 90 "$work/kmeans-a.json" "$py" bench/kmeans.py --device "$device" --case a --repeats 3 --json "$work/kmeans-a.json"
    [ "$(left)" -ge 20 ] && ! has faiss && say "kmeans-b: faiss does not import (carry faiss-cpu in .whl/); ours against scikit-learn only"
    run_step kmeans-b 180 "$work/kmeans-b.json" "$py" bench/kmeans.py --device "$device" --case b --rows 1000000 --repeats 2 --json "$work/kmeans-b.json"
  fi
else
  skip kmeans "bench/kmeans.py missing"
fi

# -- PCA -------------------------------------------------------------------------------------------
if bench reduce.py; then
  if [ "$quick" = 1 ]; then
    run_step reduce 60 - "$py" bench/reduce.py --device "$device" --quick
  else
    run_step reduce 120 - "$py" bench/reduce.py --device "$device"
  fi
else
  skip reduce "bench/reduce.py missing"
fi

# -- embedding -------------------------------------------------------------------------------------
if ! bench embed.py; then
  skip embed "bench/embed.py missing"
elif [ "$(left)" -lt 20 ]; then
  skip embed "budget spent"
elif ! has open_clip; then
  skip embed "open_clip does not import (carry open_clip_torch and its needs in .whl/)"
elif [ "$quick" = 1 ]; then
  run_step embed 90 "$work/embed.json" "$py" bench/embed.py --device "$device" --quick --data-dir "$work/jpegs" --json "$work/embed.json"
else
  run_step embed 150 "$work/embed.json" "$py" bench/embed.py --device "$device" --n 10000 --batch-size 512 --workers 12 --data-dir "$work/jpegs" --json "$work/embed.json"
fi

# -- the newer methods' benches (each when its script exists; a changed command line shows as "failed") --
newer() {  # newer NAME LIMIT_S SCRIPT ARGS...: run SCRIPT ARGS when SCRIPT exists; its --out JSON is parsed
  local name="$1" limit="$2" script="$3"; shift 3
  if bench "$script"; then
    run_step "$name" "$limit" "$work/$name.json" "$py" "bench/$script" "$@" --out "$work/$name.json"
  else
    skip "$name" "bench/$script missing"
  fi
}
newer mvcln 120 mvcln.py table data/recipes/wikipedia.toml --ratios 0.5 --methods mvcln sure --seeds 1 --device "$device"
newer retrieval 120 retrieval.py --seeds 1 --device "$device"
newer map 60 map.py --device "$device"
newer textspace 90 textspace.py --device "$device"
# the 30-cell Wikipedia sweep (--jobs 2 --batched, eval_every 0) beside one solo seed (target on the GPU: <= 60 s)
if [ "$quick" = 1 ]; then
  newer sweep 120 sweep.py --device "$device" --ratios 0.5 1 --strategies random --seeds 2 --work "$work/sweep"
else
  newer sweep 240 sweep.py --device "$device" --work "$work/sweep"
fi

# -- summary ---------------------------------------------------------------------------------------
"$py" - "$steps_file" "$out/gpu.json" "$device" "$quick" "$budget" "$start" <<'EOF'
import json, platform, sys, time
steps_file, out, device, quick, budget, start = sys.argv[1:]
steps = [json.loads(line) for line in open(steps_file) if line.strip()]
env = {"python": platform.python_version(), "machine": platform.machine(), "device": device}
try:
    import torch
    env["torch"] = torch.__version__
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
except Exception as e:  # noqa: BLE001 - report, never fail the summary
    env["torch_error"] = str(e)
summary = {"quick": quick == "1", "budget_s": int(budget), "wall_s": round(time.time() - int(start), 1),
           "environment": env, "steps": steps}
with open(out, "w") as fh:
    json.dump(summary, fh, indent=2, default=str)
print(f"gpu.sh: {len(steps)} step(s) in {summary['wall_s']} s: "
      + ", ".join(f"{s['step']} {s['status']}" for s in steps))
print(f"results: {out}")
EOF
rm -rf "$work"
