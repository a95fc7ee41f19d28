"""Training: the step engine, the trainer loop and its callbacks."""
