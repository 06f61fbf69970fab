#!/usr/bin/env bash
# The two commands of the harness:
#   ./run_all.sh          set up .venv if missing, install, run the main job
#   ./run_all.sh test     set up the same way, run the test suite
# ./run_all.sh --help explains the profiles and options.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
usage: ./run_all.sh [test [PYTEST_ARGS...]] [--profile tiny|embedded] [--data DIR] [--help]

Sets up .venv (Python >= 3.10; created when missing, reinstalled when pyproject.toml
changes) and then:
  (no command)   the main job on the chosen profile: synthesise the embedded corpus
                 (eSpeak NG, no downloads) and print what was built
  test           run the test suite (pytest; extra arguments are passed on)

Profiles:
  tiny       a few hundred synthetic utterances: seconds; what the tests use
  embedded   thousands of synthetic utterances, 200+ speakers, every mini-SUPERB task
             (default)
  paper      real corpora on disk (LibriSpeech, ...): import them with
             `harness data import`, see README.md

Options:
  --profile P    tiny | embedded (default: embedded)
  --data DIR     where the corpus goes (default: data/<profile>)
  -h, --help     this text

Environment: PYTHON (interpreter used to create .venv, default python3).
USAGE
}

setup_venv() {
  local py="${PYTHON:-python3}"
  local stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
  if [ ! -x .venv/bin/python ]; then
    echo "[run_all] creating .venv with $($py --version 2>&1)"
    "$py" -m venv .venv
  fi
  if [ ! -f "$stamp" ]; then
    echo "[run_all] installing the harness and its dependencies into .venv (first run: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet -e ".[test,pdf]"
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
  export PATH="$PWD/.venv/bin:$PATH"
  # Keep Ray quiet and local (no usage stats, no dashboard).
  export RAY_USAGE_STATS_ENABLED=0 RAY_AIR_NEW_OUTPUT=0
}

cmd=main
profile=embedded
data=""
if [ "${1:-}" = "test" ]; then cmd=test; shift; fi
if [ "$cmd" = main ]; then
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
      --data) data="${2:?--data needs a value}"; shift 2 ;;
      *) echo "run_all.sh: unknown option '$1' (see ./run_all.sh --help)" >&2; exit 2 ;;
    esac
  done
fi

setup_venv

if [ "$cmd" = test ]; then
  exec .venv/bin/python -m pytest "$@"
fi

case "$profile" in
  tiny|embedded) ;;
  paper) echo "run_all.sh: the paper profile reads real corpora: import them with 'harness data import' (README.md)" >&2; exit 2 ;;
  *) echo "run_all.sh: unknown profile '$profile' (tiny | embedded)" >&2; exit 2 ;;
esac
data="${data:-data/$profile}"
start=$(date +%s)
harness data build --profile "$profile" --out "$data"
harness data stats "$data"
echo "[run_all] corpus ready in $data ($(( $(date +%s) - start )) s)"
