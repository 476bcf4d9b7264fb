"""The Open Inference Protocol's codecs: ``rest_json`` (JSON and the binary tensor extension),
``grpc_proto`` (its gRPC messages), ``model_config`` (Triton's model configuration extension).
"""
