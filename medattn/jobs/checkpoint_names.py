"""Names of checkpoints and of the metrics they can follow (plain data, shared by the job schemas)."""
from ..evidence.metric_specs import metric_names

METRIC_NAMES = metric_names(history=True)  # the history's columns, as train_<name> and val_<name>
CHECKPOINT_NAMES = ["best_val_loss", "best_train_loss", "last"]
EXPLANATION = "val_explanation"  # the history column of train.explanation_score
# any checkpoint the train job can keep
CHECKPOINT = "^(last|best_(train|val)_(" + "|".join(METRIC_NAMES) + ")|best_" + EXPLANATION + ")$"
