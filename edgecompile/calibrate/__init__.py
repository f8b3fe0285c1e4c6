"""Calibration: reading the user's samples, observing tensor ranges, capturing activations."""
