"""Built-in jobs: train, test, explain, figure."""
