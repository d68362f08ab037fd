"""The three Hades functions; each depends on ``runtime`` only, never on another function."""
