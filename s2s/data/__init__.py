"""The data layer: reading and checking files, tokenizers and vocabularies, tag schemes, batching.
It knows nothing of models, tasks or training."""
