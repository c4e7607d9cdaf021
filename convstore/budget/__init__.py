"""Token budgets: counting steps, calibrating counts from the API's usage, choosing what history fits."""

from convstore.budget._counting import HeuristicCounter, MediaCosts, SentencePieceCounter, TokenCounter
from convstore.budget._window import Calibration, TokenBudget, WindowChoice, choose_window

__all__ = [
    "Calibration",
    "HeuristicCounter",
    "MediaCosts",
    "SentencePieceCounter",
    "TokenBudget",
    "TokenCounter",
    "WindowChoice",
    "choose_window",
]
