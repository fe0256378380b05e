"""Examples of what overparam can be given: a user's own flax module (modules.py)."""
