"""Plots of distributions, decoding methods, traces and beam trees (matplotlib, PNG or SVG).

Every function takes decodelab objects, returns a `matplotlib.figure.Figure` built without pyplot (so no
GUI backend is needed; a notebook shows it inline) and, given `path=`, also writes it as PNG or SVG:

    plot_distribution(lm.next_token_distribution("The capital of France is"), path="next.png")
    plot_methods(dist)           # greedy, temperature, top-k, top-p, min-p side by side
    plot_methods_heatmap(dist)   # the same as the tutorial's heatmap
    plot_temperatures(dist)      # T = 0.5, 1, 2
    plot_trace(lm.generate(...)) # chosen-token probability and entropy per step
    plot_beam_tree(lm.beam_search(...))
"""

from decodelab.plots.beam_tree import plot_beam_tree
from decodelab.plots.distribution import plot_distribution
from decodelab.plots.methods import DEFAULT_METHODS, decoding_methods, plot_methods, plot_methods_heatmap
from decodelab.plots.temperature import plot_temperatures
from decodelab.plots.trace import plot_trace

__all__ = [
    "DEFAULT_METHODS",
    "decoding_methods",
    "plot_beam_tree",
    "plot_distribution",
    "plot_methods",
    "plot_methods_heatmap",
    "plot_temperatures",
    "plot_trace",
]
