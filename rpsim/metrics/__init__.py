"""Metrics of a timed trace, the same functions for simulated and measured traces."""
from rpsim.metrics.bubbles import BubbleBreakdown, bubble_breakdown
from rpsim.metrics.summary import RESULT_KEYS, summarize

__all__ = ["RESULT_KEYS", "BubbleBreakdown", "bubble_breakdown", "summarize"]
