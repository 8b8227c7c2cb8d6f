"""Helpers every layer may use: atomic file and directory writes (files), loss plots (plots)."""
