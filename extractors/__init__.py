"""Feature extractors, registered by name (see extractors/registry.py for the contract)."""

from . import vgg19, vggish  # noqa: F401  (registration side effects)
from .registry import AUDIO_MODELS, VISUAL_MODELS

__all__ = ["AUDIO_MODELS", "VISUAL_MODELS"]
