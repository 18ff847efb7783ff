"""kdtoolbox's built-in detection distillers (registered through the entry point, like any plugin)."""
