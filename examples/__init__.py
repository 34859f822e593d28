"""Examples that run as modules: `python -m examples.studio` (run from the repository root)."""
