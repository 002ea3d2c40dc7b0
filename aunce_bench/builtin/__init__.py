"""The built-in method and protocol YAMLs (`methods/`, `protocols/`), shipped as package data."""
