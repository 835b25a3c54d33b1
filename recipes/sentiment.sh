#!/usr/bin/env bash
# IMDB sentiment end to end: word vocabulary -> train (select on a dev split held out of train.jsonl)
# -> classify test.jsonl -> accuracy, macro-F1 and the confusion matrix.
#
#   bash recipes/sentiment.sh [--data DIR] [--out DIR] [--cell rnn|gru|lstm] [--bidirectional|--unidirectional]
#                             [--pretrained [--pretrained-run DIR]] [--smoke]
#
#   --data DIR        folder with train.jsonl and test.jsonl ({"text": ..., "label": ...} per line)
#                     (default: ../shared/data/imdb relative to the repository root)
#   --out DIR         run directory (default runs/imdb, or runs/imdb-smoke with --smoke); an interrupted run is resumed
#   --cell CELL       encoder cell (default: the config's, lstm)
#   --bidirectional   run the encoder both ways (the default config's setting); --unidirectional: forward only
#   --pretrained      first pretrain the embedding + encoder as a language model on unsup.jsonl and the training
#                     texts (configs/imdb-pretrain.yaml, `s2s pretrain`), then fine-tune from it (encoder.init)
#   --pretrained-run DIR  the pretraining run directory (default OUT-pretrain): an interrupted one is resumed, a
#                     finished one reused as it is
#   --smoke           the same pipeline on 400 training reviews with a tiny model, scored on every 50th test
#                     review (500; test.jsonl is sorted by label): under a minute on 2 CPU cores
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(dirname "$root")/shared/data/imdb" out="" smoke=0 overrides=() pretrained=0 pre=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --cell)
      case "${2:-}" in rnn|gru|lstm) overrides+=(--set "encoder.cell=$2") ;;
        *) echo "error: --cell must be rnn, gru or lstm, got '${2:-}'" >&2; exit 2 ;; esac
      shift 2 ;;
    --bidirectional) overrides+=(--set encoder.bidirectional=true); shift ;;
    --unidirectional) overrides+=(--set encoder.bidirectional=false); shift ;;
    --pretrained) pretrained=1; shift ;;
    --pretrained-run) pretrained=1; pre="${2:?--pretrained-run needs a folder}"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$smoke" = 1 ]; then
  config="$root/configs/imdb-smoke.yaml"; out="${out:-runs/imdb-smoke}"; pre_config="$root/configs/imdb-pretrain-smoke.yaml"
  rm -rf "$out"  # a smoke run always starts from scratch
  [ "$pretrained" = 1 ] && [ -z "$pre" ] && rm -rf "$out-pretrain"
else
  config="$root/configs/imdb.yaml"; out="${out:-runs/imdb}"; pre_config="$root/configs/imdb-pretrain.yaml"
fi
pre="${pre:-$out-pretrain}"
for split in train test; do
  [ -f "$data/$split.jsonl" ] || { echo "error: --data $data: no $split.jsonl there" >&2; exit 2; }
done

if [ "$pretrained" = 1 ]; then
  [ -f "$data/unsup.jsonl" ] || { echo "error: --data $data: no unsup.jsonl there (the unlabelled reviews --pretrained learns from)" >&2; exit 2; }
  pre_resume=()
  [ -f "$pre/last.pt" ] && pre_resume=(--resume)
  echo "== pretrain the embedding + encoder as a bidirectional language model ($pre_config -> $pre)"
  s2s pretrain "$pre_config" --set "data.dir=$data" --out "$pre" "${pre_resume[@]}"
  overrides+=(--set "encoder.init=$pre")
fi

resume=()
[ -f "$out/last.pt" ] && resume=(--resume)

echo "== train ($config -> $out)"
s2s train "$config" --set data.format=jsonl --set "data.dir=$data" "${overrides[@]}" --out "$out" "${resume[@]}"

test="$data/test.jsonl"
if [ "$smoke" = 1 ]; then
  awk 'NR % 50 == 1' "$data/test.jsonl" > "$out/test-slice.jsonl"; test="$out/test-slice.jsonl"
fi
echo "== classify and score $(basename "$test") (accuracy, macro-F1, confusion matrix)"
s2s evaluate --model "$out" --data "$test" --hyp-prefix "$out/test"
