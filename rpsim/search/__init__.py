"""Plan search: enumerate candidate plans, prune them with a fast analytic evaluator, confirm the best
with the full simulator, and rank by tokens/s (less peak GPU memory breaking ties)."""
