"""Building components into a model, data and loss terms: the one place a config becomes objects."""
