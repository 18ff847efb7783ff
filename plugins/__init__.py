"""kdtoolbox's built-in plugins, installed as the package ``kdtoolbox_plugins``."""
