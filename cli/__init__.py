"""krocket component."""
