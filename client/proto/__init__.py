"""Generated protobuf code for protos/ (python scripts/gen_protos.py). Do not edit."""
