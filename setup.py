"""Build script for fastgame.

The pure-torch package always installs. Compiled ops (fastgame._C) are added by later
build steps; a missing or failed extension build must never break the install.
"""
from setuptools import find_packages, setup

setup(
    name="fastgame",
    version="0.1.0",
    description="Fast competitive-gradient optimizers (ACGD, BCGD, GACGD) for two-player games in PyTorch",
    packages=find_packages(include=["fastgame", "fastgame.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
)
