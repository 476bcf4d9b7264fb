"""Our .proto files and their generated code (python scripts/gen_protos.py). Do not edit."""
