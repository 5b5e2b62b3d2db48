"""histaug: library behind the Snakemake workflow for GAN-based synthetic augmentation of histopathology images."""

__version__ = "0.1.0"
