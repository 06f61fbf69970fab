#!/usr/bin/env bash
# The two commands of the harness:
#   ./run_all.sh          set up .venv if missing, install, run the main job
#   ./run_all.sh test     set up the same way, run the test suite
# ./run_all.sh --help explains the profiles and options.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
usage: ./run_all.sh [--quick | --all] [--profile embedded|paper] [options]
       ./run_all.sh test [PYTEST_ARGS...]
       ./run_all.sh lock | repair
       ./run_all.sh gpu [OUT.json]

Sets up .venv from requirements.lock (Python >= 3.10; created when missing, reinstalled
when the lock changes or the installed packages drift from it, then smoke-checked), then
runs the main job: the reproduction of the paper's tables.

  (no command)   embedded profile, end to end: synthesise the corpus (eSpeak NG, no
                 downloads), take the shipped embedded teacher, run the main study
                 (sweeps/embedded/main.yaml: 5 arms x 7 paired seeds, distill + held-out
                 metrics + SUPERB scoring per trial, Ray Tune) and the ASKD study
                 (sweeps/embedded/askd.yaml: the shipped ASR teacher, ce/kd/askd x 5
                 paired seeds), write the report under reports/embedded-run/ and print
                 its path (the 60-minute budget on 2 cores); reports/embedded/ is the
                 committed reference report
  test           the test suite (pytest; extra arguments are passed on)
  lock           re-resolve pyproject.toml's ranges into requirements.lock (uv, with
                 hashes): after changing a dependency, or to take upstream releases
  repair         delete .venv and install it again from requirements.lock
  gpu            the GPU checks as one short script, for a machine with CUDA: the
                 gpu-marked tests, then harness bench gpu (JSON to OUT.json, default
                 docs/benchmarks/gpu.json); refuses in one line without a CUDA device

Profiles:
  tiny       a few hundred synthetic utterances and the dummy teacher: a smoke run
  embedded   the synthetic corpus (200+ speakers, every mini-SUPERB task) and the
             shipped HuBERT-style teacher trained on it (default)
  paper      real corpora and checkpoints on disk, on GPUs (see README.md):
             --librispeech DIR (LibriSpeech root) and --teacher SPEC are required

Options:
  --quick              the main table only: one seed, 150 steps, KS and IC scoring plus the held-out loss and phone probe
  --all                the default studies and the others under sweeps/<profile>/: the single-seed
                       ablations (extra arms, schedule, loss weight, layer map x init) and,
                       embedded, the ASKD ablation (about 40 minutes more); the report covers them all
  --retrain-teacher    pretrain the embedded teacher here instead of using the shipped one
  --profile P          tiny | embedded | paper (default: embedded)
  --librispeech DIR    paper profile: LibriSpeech root (train-*/dev-clean/test-clean)
  --teacher SPEC       paper profile: e.g. s3prl:hubert:/ckpt/hubert_base_ls960.pt
  -h, --help           this text

Environment: PYTHON (interpreter used to create .venv, default python3).
Re-running resumes: finished trials, the corpus and caches are reused.
USAGE
}

# The environment is requirements.lock: every package, transitively, at an exact version
# with its hashes. pyproject.toml holds the human-readable ranges the lock is made from
# (./run_all.sh lock). The venv is stamped with the hash of both files.
LOCK=requirements.lock
UV_VERSION=0.13.9  # the locking tool (used by ./run_all.sh lock only)

venv_stamp() { echo ".venv/.lock-$(cat "$LOCK" pyproject.toml | sha1sum | cut -c1-12)"; }

# pip, minus one warning this workplace's pip configuration prints for every package
pip_quiet() {
  .venv/bin/python -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

install_from_lock() {
  local pip=(pip_quiet)
  echo "[run_all] installing $LOCK into .venv (first run: a few minutes)"
  "${pip[@]}" install --quiet --require-hashes --no-deps -r "$LOCK"
  # what the lock does not name goes (a venv made before the lock, or a package added by hand)
  local extra
  extra=$(.venv/bin/python -m harness.envcheck extra "$LOCK")
  if [ -n "$extra" ]; then
    echo "[run_all] removing packages the lock does not name: $extra"
    # shellcheck disable=SC2086
    "${pip[@]}" uninstall --quiet --yes $extra
  fi
  # the harness itself, editable; setuptools' warnings are shown only if the install fails
  local out
  out=$("${pip[@]}" install --quiet --no-deps --no-build-isolation -e . 2>&1) \
    || { echo "$out" >&2; die "installing the harness into .venv failed (above)"; }
}

setup_venv() {
  local py="${PYTHON:-python3}" msg stamp
  [ -f "$LOCK" ] || die "$LOCK is missing: restore it from git or run ./run_all.sh lock"
  stamp=$(venv_stamp)
  if [ ! -x .venv/bin/python ]; then
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
      || die "$py is not Python >= 3.10 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.10+"
    echo "[run_all] creating .venv with $("$py" --version 2>&1)"
    "$py" -m venv .venv
  fi
  if [ -f "$stamp" ] && ! msg=$(.venv/bin/python -m harness.envcheck drift "$LOCK"); then
    echo "[run_all] $msg: reinstalling from the lock"
    rm -f "$stamp"
  fi
  if [ ! -f "$stamp" ]; then
    install_from_lock
    msg=$(.venv/bin/python -m harness.envcheck drift "$LOCK") || die "$msg (after installing it: run ./run_all.sh repair)"
    msg=$(.venv/bin/python -m harness.envcheck smoke 2>/dev/null) \
      || die "${msg:-the smoke check crashed (run .venv/bin/python -m harness.envcheck smoke to see why)}; if a fresh .venv fails too, the lock holds a pair that does not load: fix the pins in pyproject.toml and run ./run_all.sh lock"
    rm -f .venv/.lock-* .venv/.installed-*
    touch "$stamp"
  fi
  export PATH="$PWD/.venv/bin:$PATH"
  # Keep Ray quiet and local (no usage stats, no dashboard).
  export RAY_USAGE_STATS_ENABLED=0 RAY_AIR_NEW_OUTPUT=0
}

# Re-resolve pyproject.toml's ranges into requirements.lock (all platforms, Python >= 3.10,
# with hashes). Run it after changing a dependency in pyproject.toml, or to take upstream
# releases on purpose; then run ./run_all.sh test and commit both files.
make_lock() {
  local tool=.venv-lock py="${PYTHON:-python3}"
  if [ ! -x "$tool/bin/uv" ] || [ "$("$tool/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    "$py" -m venv "$tool"
    "$tool/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  "$tool/bin/uv" pip compile pyproject.toml --extra test --extra pdf --group bootstrap \
    --universal --python-version 3.10 --generate-hashes --quiet \
    --custom-compile-command "./run_all.sh lock" -o "$LOCK"
  echo "[run_all] wrote $LOCK ($(grep -c '^[a-zA-Z]' "$LOCK") pins); run ./run_all.sh test, then commit it with pyproject.toml"
}

die() { echo "run_all.sh: $*" >&2; exit 2; }

cmd=main
profile=embedded
quick=0
all=0
retrain=0
librispeech=""
teacher_spec=""
results=results
case "${1:-}" in
  test|lock|repair|gpu) cmd=$1; shift ;;
esac
if [ "$cmd" = lock ]; then make_lock; exit 0; fi
if [ "$cmd" = repair ]; then
  echo "[run_all] repair: removing .venv and installing it again from $LOCK"
  rm -rf .venv
fi
if [ "$cmd" = main ]; then
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --quick) quick=1; shift ;;
      --all) all=1; shift ;;
      --retrain-teacher) retrain=1; shift ;;
      --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
      --librispeech) librispeech="${2:?--librispeech needs a directory}"; shift 2 ;;
      --teacher) teacher_spec="${2:?--teacher needs a spec}"; shift 2 ;;
      *) die "unknown option '$1' (see ./run_all.sh --help)" ;;
    esac
  done
  case "$profile" in
    tiny|embedded|paper) ;;
    *) die "unknown profile '$profile' (tiny | embedded | paper)" ;;
  esac
  [ "$quick" = 1 ] && [ "$all" = 1 ] && die "--quick and --all exclude each other (--quick: the main table only)"
  # Check the paper profile's inputs before anything long starts.
  if [ "$profile" = paper ]; then
    [ -n "$librispeech" ] || die "--profile paper needs --librispeech DIR"
    [ -d "$librispeech" ] || die "--librispeech $librispeech: no such directory"
    [ -n "$teacher_spec" ] || die "--profile paper needs --teacher SPEC (e.g. s3prl:hubert:/ckpt/hubert_base_ls960.pt)"
    ckpt="${teacher_spec##*:}"
    [ -e "$ckpt" ] || die "--teacher $teacher_spec: $ckpt does not exist"
  fi
fi

setup_venv

if [ "$cmd" = repair ]; then echo "[run_all] .venv matches $LOCK and loads"; exit 0; fi
if [ "$cmd" = test ]; then
  exec .venv/bin/python -m pytest "$@"
fi
if [ "$cmd" = gpu ]; then
  .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "gpu: torch sees no CUDA device (check nvidia-smi and CUDA_VISIBLE_DEVICES); nothing was run"
  gpu_out="${1:-docs/benchmarks/gpu.json}"
  echo "[run_all] gpu-marked tests"
  .venv/bin/python -m pytest -q -m gpu
  echo "[run_all] harness bench gpu -> $gpu_out"
  exec .venv/bin/harness bench gpu --out "$gpu_out"
fi

start=$(date +%s)
step() { echo; echo "[run_all] $* ($(( $(date +%s) - start )) s)"; }
sweep_args=(--resume)
suffix=""
if [ "$quick" = 1 ]; then
  suffix="-quick"
  sweep_args+=(--seeds 0 "--suffix=$suffix")
fi

if [ "$profile" = paper ]; then
  data=data/paper
  step "importing LibriSpeech from $librispeech"
  harness data import librispeech "$librispeech" --out "$data"
  sets=(--set "teacher.spec=$teacher_spec" --set "data.corpus=$data")
  studies=(main)
  [ "$all" = 1 ] && studies=(main extra_arms schedule loss_weight layer_map_init)
  for s in "${studies[@]}"; do
    step "study sweeps/paper/$s.yaml"
    harness sweep "sweeps/paper/$s.yaml" "${sweep_args[@]}" "${sets[@]}"
  done
  # The ASKD study needs a local Whisper checkpoint (teacher.path in sweeps/base/asr_paper.yaml);
  # run it with: harness sweep sweeps/paper/askd.yaml
  step "report"
  harness report "$results"/paper-*"$suffix" --out "reports/paper$suffix"
  echo "[run_all] report: $PWD/reports/paper$suffix/index.html"
  exit 0
fi

data="data/$profile"
# The distill utterances the studies train on (and hold out): the teacher cache's --limit
# and the corpus build's distill count; = data.max_utterances of sweeps/base/embedded.yaml
# (tests/test_run_all_sizes.py). --quick: 150 steps of 8 utterances read each of the first
# 1200 about once (the first 512 are the held-out set).
limit=4500
[ "$quick" = 1 ] && limit=1200
# The embedded build renders only what the run reads (the same audio as the full build's:
# every utterance is seeded on its own): the distill pool and the scored tasks' splits
# (--quick: KS, IC, and asr_test for the CKA figures); pretraining a teacher reads all of it.
only=""
if [ "$profile" = embedded ] && [ "$retrain" = 0 ]; then
  only="--only=distill:$limit,ks,ic,sid,er,asr"
  [ "$quick" = 1 ] && only="--only=distill:$limit,ks,ic,asr_test"
fi
step "corpus: $data${only:+ ($only)}"
# shellcheck disable=SC2086
harness data build --profile "$profile" --out "$data" $only
harness data stats "$data"

teacher=embedded
probe_dir="$results/$profile-teacher-probe"
if [ "$profile" = tiny ]; then
  teacher=dummy
elif [ "$retrain" = 1 ]; then
  step "pretraining the embedded teacher (about 90 min on 2 cores)"
  harness teacher pretrain --config harness/assets/pretrain_embedded.yaml --data "$data" --out "$results/teacher/teacher_embedded.pt"
  teacher="embedded:$results/teacher/teacher_embedded.pt"
fi

if [ "$profile" = tiny ]; then
  step "tiny smoke study"
  harness sweep sweeps/tiny/main.yaml "${sweep_args[@]}"
  step "report"
  harness report "$results"/tiny-main"$suffix" --out "reports/tiny$suffix"
  echo "[run_all] report: $PWD/reports/tiny$suffix/index.html"
  exit 0
fi

if [ "$teacher" = embedded ]; then
  # The shipped teacher's probe was measured on this corpus recipe and seed (a rebuild's audio
  # differs slightly: README, "The embedded corpus");
  # harness/assets/README.md has the command. A retrained teacher is probed here.
  probe_json=harness/assets/probe_embedded.json
else
  probe_json="$probe_dir/probe.json"
  if [ ! -f "$probe_json" ]; then
    step "probing the teacher's layers (phone, speaker, CKA)"
    harness teacher probe --teacher "$teacher" --data "$data" --out "$probe_dir"
  fi
fi

# Teacher features of the distill split, built once with both cores before the trials
# (each trial then reads them; the sweep would otherwise build them inside one 1-CPU trial).
step "teacher features of $data/distill.jsonl (cached once, shared by every trial)"
harness teacher cache --teacher "$teacher" --manifest "$data/distill.jsonl" --layers 1-8 --out cache/teacher --limit "$limit"

# The SUPERB score's two baselines (fbank and the teacher), scored side by side once into
# the memo every trial reads (otherwise the first trial scores them while the others wait).
step "SUPERB baselines: fbank and $teacher"
tasks=ks,ic,sid,er,pr
[ "$quick" = 1 ] && tasks=ks,ic
# A failed task exits 1 with one line naming it (nothing of that baseline is memoised):
# wait for both, then stop, so the trials never score against a missing baseline.
harness evaluate fbank --as-baseline --corpus "$data" --tasks "$tasks" --quiet &
fb_pid=$!
baseline_rc=0
harness evaluate "$teacher" --as-baseline --corpus "$data" --tasks "$tasks" --quiet || baseline_rc=$?
wait "$fb_pid" || baseline_rc=$?
if [ "$baseline_rc" != 0 ]; then
  echo "[run_all] a SUPERB baseline failed (its line is above): fix it and rerun ./run_all.sh" >&2
  exit "$baseline_rc"
fi

sets=(--set "teacher.spec=$teacher")
# The default run is the main study and the ASKD study: what the 60-minute budget on 2 cores
# allows once they resolve their comparisons (docs/benchmarks.md, "Sizing the default
# study"); --all adds the single-seed ablations and the ASKD ablation (a rerun of
# ./run_all.sh --all reuses both studies); --quick runs the main table only
studies=(main askd)
[ "$quick" = 1 ] && studies=(main)
[ "$all" = 1 ] && studies=(main askd extra_arms schedule loss_weight layer_map_init askd_ablation)
# --quick: 150 steps on the first 1200 distill utterances (the only ones built and cached),
# and the students are scored on KS and IC only (the held-out phone probe stands in for
# PR, the costliest head): the 10-minute budget on 2 cores
if [ "$quick" = 1 ]; then
  sets+=(--set train.steps=150 --set data.max_utterances=1200)
  sweep_args+=(--tasks "$tasks")
fi
for s in "${studies[@]}"; do
  step "study sweeps/$profile/$s.yaml"
  if [ "$s" = askd ] || [ "$s" = askd_ablation ]; then
    # the ASR track: its own Whisper-style teacher and students (no SFM teacher to set)
    harness sweep "sweeps/$profile/$s.yaml" --resume
  else
    harness sweep "sweeps/$profile/$s.yaml" "${sweep_args[@]}" "${sets[@]}"
  fi
done

step "report"
dirs=()
for s in "${studies[@]}"; do dirs+=("$results/$profile-${s//_/-}$suffix"); done
# the speed ratios come from the committed side-by-side benchmark (the sweep's trials share
# the two cores): docs/benchmarks.md, `harness bench stacking`
bench_json=docs/benchmarks/stacking-$profile-cpu.json
bench_args=()
[ -f "$bench_json" ] && bench_args=(--bench "$bench_json")
# reports/embedded/ is the committed reference report (harness report refuses to overwrite it):
# a run writes its own next to it; refresh the reference deliberately with harness report --overwrite
report_dir="reports/$profile-run$suffix"
harness report "${dirs[@]}" --probe "$probe_json" "${bench_args[@]}" --out "$report_dir"
echo "[run_all] done in $(( $(date +%s) - start )) s"
echo "[run_all] report: $PWD/$report_dir/index.html"
