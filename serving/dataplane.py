"""The data plane: all the business logic of predict, metadata and status, for both protocols.

The REST and gRPC adapters decode their request into plain values (numpy arrays, version
numbers, names), call one method here, and encode the result. Every client mistake is raised as
a ``contract.errors.ServingError`` with its gRPC code; the adapters only translate it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import numpy as np
from google.protobuf import json_format

from contract import (
    INPUT_NAME,
    INPUT_SPEC,
    MAX_BATCH_SIZE,
    METADATA_FIELD_SIGNATURE_DEF,
    OUTPUT_NAMES,
    OUTPUT_SPEC,
    PREDICT_METHOD_NAME,
    SIGNATURE_DEF_MAP_TYPE_URL,
    SIGNATURE_NAME,
)
from contract.codecs import data_type
from contract.errors import InvalidArgument, NotFound
from contract.proto import digits_tfserving_pb2 as pb
from serving import metrics
from serving.batching import Batcher
from serving.repository import ModelRepository
from serving.runtime import LoadedModel, prepare_images, signature_check


def _tensor_info(name: str, dtype: str, shape: tuple) -> pb.TensorInfo:
    info = pb.TensorInfo(name=name, dtype=data_type(dtype))
    info.tensor_shape.dim.extend(
        pb.TensorShapeProto.Dim(size=-1 if s is None else s) for s in shape
    )
    return info


def signature_def_map() -> pb.SignatureDefMap:
    """The model's one signature as TF Serving describes it (batch dimension -1)."""
    signature = pb.SignatureDef(method_name=PREDICT_METHOD_NAME)
    for name, (dtype, shape) in INPUT_SPEC.items():
        signature.inputs[name].CopyFrom(_tensor_info(name, dtype, shape))
    for name, (dtype, shape) in OUTPUT_SPEC.items():
        signature.outputs[name].CopyFrom(_tensor_info(name, dtype, shape))
    result = pb.SignatureDefMap()
    result.signature_def[SIGNATURE_NAME].CopyFrom(signature)
    return result


class DataPlane:
    """Predict / metadata / status over one model repository, optionally through a batcher."""

    def __init__(
        self,
        repository: ModelRepository,
        batcher: Batcher | None = None,
        max_batch: int = MAX_BATCH_SIZE,
    ) -> None:
        self.repository = repository
        self.model_name = repository.model_name
        self.batcher = batcher
        self.max_batch = max_batch
        self._draining = threading.Event()
        self._signatures = signature_def_map()
        # The REST metadata body, rendered once: TF Serving's JSON of the SignatureDefMap.
        self.signature_map_json = json_format.MessageToDict(
            self._signatures,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True,
        )

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Ready to take traffic: a version is AVAILABLE and we are not shutting down."""
        return self.repository.ready and not self._draining.is_set()

    def start_draining(self) -> None:
        """Readiness turns false; requests already accepted still finish."""
        self._draining.set()

    # --- the three operations ------------------------------------------------------------------
    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """The loaded version a request addresses; NOT_FOUND / UNAVAILABLE otherwise."""
        if name != self.model_name:
            raise NotFound(
                f"model {name!r} is not served here (this server serves {self.model_name!r})"
            )
        return self.repository.get(version, label)

    def predict(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        output_filter: Iterable[str] = (),
        timeout: float | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Run the model; returns the version that answered and the requested outputs."""
        model = self.resolve(name, version, label)
        signature_check(signature_name, SIGNATURE_NAME)
        unknown = sorted(set(inputs) - {INPUT_NAME})
        if unknown or INPUT_NAME not in inputs:
            raise InvalidArgument(
                f"this model takes one input named {INPUT_NAME!r}, got {sorted(inputs) or 'none'}"
            )
        wanted = tuple(output_filter) or OUTPUT_NAMES
        bad = [o for o in wanted if o not in OUTPUT_NAMES]
        if bad:
            raise InvalidArgument(
                f"output_filter names {bad}; this model outputs {list(OUTPUT_NAMES)}"
            )
        images = prepare_images(inputs[INPUT_NAME], self.max_batch)
        if self.batcher is not None:
            outputs = self.batcher.run(model, images, timeout)
        else:
            outputs = model.run(images)
            metrics.BATCH_SIZE.observe(len(images))
        return model.version, {key: outputs[key] for key in OUTPUT_NAMES if key in wanted}

    def metadata(
        self,
        name: str,
        version: int | None = None,
        label: str | None = None,
        fields: Iterable[str] = (METADATA_FIELD_SIGNATURE_DEF,),
    ) -> pb.GetModelMetadataResponse:
        """TF Serving's metadata: the signature map packed in an Any."""
        fields = list(fields)
        if not fields:
            raise InvalidArgument(
                "GetModelMetadataRequest must name a metadata_field "
                f"({METADATA_FIELD_SIGNATURE_DEF!r})"
            )
        unsupported = [f for f in fields if f != METADATA_FIELD_SIGNATURE_DEF]
        if unsupported:
            raise InvalidArgument(
                f"metadata field(s) {unsupported} not supported; "
                f"only {METADATA_FIELD_SIGNATURE_DEF!r}"
            )
        model = self.resolve(name, version, label)
        response = pb.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = model.version
        any_ = response.metadata[METADATA_FIELD_SIGNATURE_DEF]
        any_.Pack(self._signatures)
        any_.type_url = SIGNATURE_DEF_MAP_TYPE_URL  # official clients unpack TF Serving's type
        return response

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> pb.GetModelStatusResponse:
        """TF Serving's status: one row per version the repository knows of."""
        if name != self.model_name:
            raise NotFound(
                f"model {name!r} is not served here (this server serves {self.model_name!r})"
            )
        if label is not None:
            version = self.resolve(name, None, label).version
        response = pb.GetModelStatusResponse()
        for row in self.repository.statuses(version):
            entry = response.model_version_status.add(
                version=row.version, state=pb.ModelVersionStatus.State.Value(row.state)
            )
            entry.status.error_code = pb.Code.Value(row.error_code)
            entry.status.error_message = row.error_message
        if not response.model_version_status and version is None:
            raise NotFound(f"model {name!r} has no versions under {self.repository.base_path}")
        return response
