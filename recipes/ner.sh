#!/usr/bin/env bash
# CoNLL-2003 English NER end to end: word vectors -> train (select on valid.txt) -> tag test.txt -> entity F1.
#
#   bash recipes/ner.sh [--data DIR] [--out DIR] [--text FILE]... [--no-vectors] [--smoke]
#
#   --data DIR    folder with train.txt, valid.txt, test.txt in the original 4-column IOB1 format
#                 (default: ../shared/data/conll2003 relative to the repository root)
#   --out DIR     run directory (default runs/conll2003, or runs/conll2003-smoke with --smoke);
#                 an interrupted run in DIR is resumed
#   --text FILE   unlabelled text for the word vectors, one text per line or .jsonl with a "text" field
#                 (repeatable; default: the IMDB reviews in ../shared/data/imdb); train.txt's tokens are always added
#   --no-vectors  no word vectors: the embeddings start at random
#   --smoke       the same pipeline on 400 sentences with a tiny model (under a minute on 2 CPU cores);
#                 its vectors come from train.txt alone
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(dirname "$root")/shared/data/conll2003" out="" smoke=0 vectors=1 texts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --text) texts+=(--text "${2:?--text needs a file}"); shift 2 ;;
    --no-vectors) vectors=0; shift ;;
    --smoke) smoke=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# --dim must equal the config's model.emb_dim.
if [ "$smoke" = 1 ]; then
  config="$root/configs/ner-smoke.yaml"; out="${out:-runs/conll2003-smoke}" dim=32 texts=()
  rm -rf "$out"  # a smoke run always starts from scratch
else
  config="$root/configs/conll2003.yaml"; out="${out:-runs/conll2003}" dim=100
  if [ "$vectors" = 1 ] && [ ${#texts[@]} = 0 ]; then
    imdb="$(dirname "$root")/shared/data/imdb"
    texts=(--text "$imdb/train.jsonl" --text "$imdb/test.jsonl")
  fi
fi
for split in train valid test; do
  [ -f "$data/$split.txt" ] || { echo "error: --data $data: no $split.txt there" >&2; exit 2; }
done

resume=() with_vectors=()
[ -f "$out/last.pt" ] && resume=(--resume)

if [ "$vectors" = 1 ]; then
  with_vectors=(--set "vocab.word_vectors=$out/vectors.vec")
  if [ -f "$out/vectors.vec" ]; then
    echo "== word vectors: $out/vectors.vec (kept from before)"
  else
    echo "== word vectors (skip-gram on unlabelled text + train.txt -> $out/vectors.vec)"
    s2s vectors "${texts[@]}" --conll "$data/train.txt" --dim "$dim" --out "$out/vectors.vec"
  fi
fi

echo "== train ($config -> $out)"
s2s train "$config" --set data.format=conll --set "data.dir=$data" "${with_vectors[@]}" --out "$out" "${resume[@]}"

echo "== tag and score test.txt (entity F1, exact span and type)"
s2s evaluate --model "$out" --conll "$data/test.txt" --hyp-prefix "$out/test"
