"""The models wing. The registry (models/registry.py) holds DAM and the baselines; a model in
its own file registers itself when imported, and this package imports them all before any of
its modules is used, so every model is registered, in one order. Adding a model: its file,
and its name in the lines below."""

# isort: off
from . import registry  # noqa: F401  (first: the bases the model files subclass)
from . import psp  # noqa: F401  (its decorators register it)
from . import cmbs  # noqa: F401
# isort: on
