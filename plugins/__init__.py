"""medattn built-in plugins (installed as medattn_plugins)."""
