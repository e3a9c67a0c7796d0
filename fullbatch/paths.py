"""Where the project's Hydra configs live, for tools that compose them outside the entry script."""
import os


def config_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")
