"""The dashboard's screens and dialogs."""

from mosaic_tui.screens.confirm import ConfirmKill, ConfirmKillAll, ConfirmQuit
from mosaic_tui.screens.detail import DetailScreen
from mosaic_tui.screens.diff import DiffScreen
from mosaic_tui.screens.help import HelpScreen
from mosaic_tui.screens.spawn import SpawnScreen

__all__ = [
    "ConfirmKill",
    "ConfirmKillAll",
    "ConfirmQuit",
    "DetailScreen",
    "DiffScreen",
    "HelpScreen",
    "SpawnScreen",
]
