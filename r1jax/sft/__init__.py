"""Supervised fine-tuning: prompt-masked rows, packing, the epoch loop."""
