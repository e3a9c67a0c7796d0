"""Where the project's Hydra configs live, and the one way tools and tests compose them outside the entry script."""
import os


def config_dir():
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(package), "config")


def compose_config(overrides=(), config_name="train", return_hydra_config=False):
    """The config the entry script would get for these command-line overrides (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    import fullbatch.config.schema  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
