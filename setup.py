from setuptools import find_packages, setup

# Hydra's launcher and sweeper plugins, pinned to releases that work with hydra-core 1.3 (the sweeper needs
# optuna < 3); submitit also runs `python -m fullbatch.reproduce --launcher slurm|local`.
CLUSTER = ["submitit>=1.5", "hydra-submitit-launcher==1.2.0", "hydra-optuna-sweeper==1.2.0", "optuna==2.10.1"]

setup(
    name="fullbatch",
    version="0.1.0",
    license="MIT",
    description="Full-batch gradient descent for image classification: 'Stochastic Training is Not Necessary "
                "for Generalization' in PyTorch",
    packages=find_packages(include=["fullbatch", "fullbatch.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "torchvision>=0.21",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.4",
        "numpy>=1.24",
        "lmdb>=1.4",
        "matplotlib>=3.7",
        "scipy>=1.11",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "tensorboard>=2.14", "wandb>=0.17", *CLUSTER],
                    "cluster": CLUSTER, "tensorboard": ["tensorboard>=2.14"], "wandb": ["wandb>=0.17"]},
)
