"""Names of checkpoints and of the metrics they can follow (plain data, shared by the job schemas)."""

METRIC_NAMES = ("loss", "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "roc_auc",
                "pr_auc", "brier", "ece")  # = metrics.MONITORABLE (kept here: job modules must not import sklearn)
CHECKPOINT_NAMES = ["best_val_loss", "best_train_loss", "last"]
CHECKPOINT = "^(last|best_(train|val)_(" + "|".join(METRIC_NAMES) + "))$"  # any checkpoint the train job can keep
