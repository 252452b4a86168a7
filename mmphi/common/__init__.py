"""The layer under every stage: question types and answer scoring, text normalisation, tables and charts.

Nothing here imports another part of mmphi, so data, training, evaluation and the reports all import
it downward (tests/test_layers.py checks the layering).
"""
