"""Pure numbers: metric declarations, metrics, statistics, explanation quality, calibration, conformal prediction
sets, uncertainty, operating points and decision curves, subgroups. No run paths."""
