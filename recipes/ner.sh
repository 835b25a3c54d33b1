#!/usr/bin/env bash
# CoNLL-2003 English NER end to end: train (select on valid.txt) -> tag test.txt -> entity F1 (exact span and type).
#
#   bash recipes/ner.sh [--data DIR] [--out DIR] [--smoke]
#
#   --data DIR  folder with train.txt, valid.txt, test.txt in the original 4-column IOB1 format
#               (default: ../shared/data/conll2003 relative to the repository root)
#   --out DIR   run directory (default runs/conll2003, or runs/conll2003-smoke with --smoke);
#               an interrupted run in DIR is resumed
#   --smoke     the same pipeline on 400 sentences with a tiny model (under a minute on 2 CPU cores)
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(dirname "$root")/shared/data/conll2003" out="" smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$smoke" = 1 ]; then
  config="$root/configs/ner-smoke.yaml"; out="${out:-runs/conll2003-smoke}"
  rm -rf "$out"  # a smoke run always starts from scratch
else
  config="$root/configs/conll2003.yaml"; out="${out:-runs/conll2003}"
fi
for split in train valid test; do
  [ -f "$data/$split.txt" ] || { echo "error: --data $data: no $split.txt there" >&2; exit 2; }
done

resume=()
[ -f "$out/last.pt" ] && resume=(--resume)

echo "== train ($config -> $out)"
s2s train "$config" --set data.format=conll --set "data.dir=$data" --out "$out" "${resume[@]}"

echo "== tag and score test.txt (entity F1, exact span and type)"
s2s evaluate --model "$out" --conll "$data/test.txt" --hyp-prefix "$out/test"
