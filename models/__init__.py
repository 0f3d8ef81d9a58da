"""The models wing. Importing any of its modules loads the registry first, so every model
(those in their own files too, imported at the end of registry.py) is registered in one order."""
from . import registry  # noqa: F401
