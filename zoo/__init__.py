"""The architecture zoo: real architectures converted in every mode, measured (see README.md)."""
