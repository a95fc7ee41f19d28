"""Using a trained run: the Predictor (load_run), predict and export, the notebook API and the inference CLI."""
