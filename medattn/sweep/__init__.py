"""``medattn sweep``: Optuna studies over an experiment's variants, local workers or a Slurm array."""
