"""Serving a trained model: continuous batching (engine.py)."""
