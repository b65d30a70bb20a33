"""Reading files made by other tools.

``read_pth`` / ``read_state_dict`` (``snnvae.io.pth``) load PyTorch ``.pth`` files (zip and
legacy formats) into NumPy arrays with no torch and without executing pickled code.
``snnvae.io.official`` maps the official FSVAE and feature-autoencoder state dicts onto this
project's models (names and weight layouts).
"""
from .pth import PthError, UnsafePickleError, read_pth, read_state_dict
