"""Helpers shared by the test layers (real processes on loopback, waiting on conditions)."""
