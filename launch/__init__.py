"""Launchers for the paper's experiment grid (see `launch.sweep`)."""
