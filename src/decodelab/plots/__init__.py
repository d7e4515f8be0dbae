"""Plots of distributions, decoding methods, traces and beam trees (matplotlib, PNG or SVG)."""
