"""Figures of traces and schedule comparisons, and the Chrome trace export. Headless by construction:
figures are `matplotlib.figure.Figure` objects rendered by the Agg/SVG/PDF canvases, never through
pyplot, so no window can open and a caller's pyplot backend is left alone. Never prints; never imports
torch."""
