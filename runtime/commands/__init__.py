"""The commands: one module each, with ``add_parser(sub)`` and ``run(args) -> int``.

:data:`COMMANDS` is the registry ``frameqc`` builds its parser from, in the order of its
help. Commands that need torch (``export``, ``train``) live in ``frameqc.export`` and
plug in through the ``frameqc.commands`` entry point group; the runtime knows nothing of
them. A command module imports only argparse-level things at the top: what it runs is
imported inside ``run``, so ``--help`` and light commands start fast.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

COMMANDS = ("classify", "watch", "serve", "status", "evaluate", "label", "archive", "info",
            "bin", "night", "demo")
PLUGIN_GROUP = "frameqc.commands"


def load(name: str) -> ModuleType:
    """The module of a built-in command."""
    return import_module(f"{__name__}.{name}")
