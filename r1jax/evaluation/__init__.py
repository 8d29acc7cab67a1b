"""Evaluation: metrics (pass@k, cons@k, grouped tables) and the sampling harness."""
