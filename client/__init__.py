"""digits client: the contract, tensor codecs, REST and gRPC clients, CLI and Locust users."""
