"""One package per recogniser; service/registry.py names them (MODEL=<name>)."""
