"""The context's modalities, one module each (the interface: :mod:`tr1_env.context.modalities.base`).

Importing this package imports every module in it, and each registers its modality: a new module here is a new
section of every context, in both builders.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
