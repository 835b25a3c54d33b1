"""s2s: recurrent sequence models (translation, tagging, classification, forecasting) on one shared encoder."""
from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["Classifier", "Forecaster", "Tagger", "Translator", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import s2s` (and `s2s --help`) stays fast.
    if name == "Translator":
        from s2s.tasks.translation import Translator

        return Translator
    if name == "Tagger":
        from s2s.tasks.tagging import Tagger

        return Tagger
    if name == "Classifier":
        from s2s.tasks.classification import Classifier

        return Classifier
    if name == "Forecaster":
        from s2s.tasks.forecasting import Forecaster

        return Forecaster
    raise AttributeError(name)
