r"""vaeflow: train and compare Variational Autoencoders with structured approximate posteriors."""

__version__ = "0.1.0"
