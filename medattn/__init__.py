"""medattn: attention mechanisms and explanations for medical image classifiers."""
__version__ = "0.1.0"
