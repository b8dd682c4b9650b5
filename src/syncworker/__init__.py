"""syncworker: keeps data moving between the systems a product runs on."""

__version__ = "0.1.0"
