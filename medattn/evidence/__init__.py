"""Pure numbers about predictions: metric declarations, metrics, statistics, calibration, conformal prediction
sets, uncertainty, operating points and decision curves, subgroups. Nothing here knows a run directory."""
