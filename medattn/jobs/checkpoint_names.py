"""Names of the checkpoints the train job keeps (shared by the job schemas)."""
CHECKPOINT_NAMES = ["best_val_loss", "best_train_loss", "last"]
