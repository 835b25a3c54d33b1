#!/usr/bin/env bash
# Multi30k de->en end to end: SentencePiece -> train -> translate test2016 -> detokenized sacreBLEU.
#
#   bash recipes/translate.sh [--data DIR] [--out DIR] [--smoke]
#
#   --data DIR  folder with train.{de,en}, val.{de,en}, test2016.{de,en} (e.g. ../shared/data/multi30k);
#               without it, Multi30k is loaded from the Hugging Face hub (bentrevett/multi30k; needs the network)
#   --out DIR   run directory (default runs/multi30k, or runs/multi30k-smoke with --smoke);
#               an interrupted run in DIR is resumed
#   --smoke     the same pipeline on 400 pairs with a tiny model (under a minute on 2 CPU cores)
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
data="" out="" smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$smoke" = 1 ]; then
  config="$root/configs/smoke.yaml"; out="${out:-runs/multi30k-smoke}"
  rm -rf "$out"  # a smoke run always starts from scratch
else
  config="$root/configs/multi30k.yaml"; out="${out:-runs/multi30k}"
fi

if [ -n "$data" ]; then
  [ -d "$data" ] || { echo "error: --data $data: no such folder" >&2; exit 2; }
  source_args=(--set data.format=text --set "data.dir=$data")
else
  source_args=(--set data.format=hub --set data.hub=bentrevett/multi30k
               --set data.train=train --set data.dev=validation --set data.test=test)
fi

resume=()
[ -f "$out/last.pt" ] && resume=(--resume)

echo "== train ($config -> $out)"
s2s train "$config" "${source_args[@]}" --out "$out" "${resume[@]}"

echo "== translate and score the test split (beam search, detokenized sacreBLEU)"
s2s evaluate --model "$out" --split test --hyp-prefix "$out/test"
