"""TF Serving's codecs: ``rest_json`` (predict, status and metadata JSON), ``json_tensor``
(the fast parser of a predict body's pixel arrays), ``grpc_proto`` (its gRPC messages).
"""
