"""Pure numbers: metric declarations, metrics, statistics and explanation quality. No run paths."""
