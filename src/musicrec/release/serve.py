"""Serve pushed models on this machine with KServe's Python model server, as the cluster's TF Serving answers.

Each model is a pushed model base (``<push_destination>/<model>``, integer version directories, the newest
complete one served) or one version directory. The V1 protocol carries TF Serving's REST bodies, so a client sends
the same request here as to the cluster's InferenceService::

    POST /v1/models/sentiment:predict
    {"instances": [{"review_text": "not good at all", "summary_text": "One Star"}]}
    POST /v1/models/recommender:predict
    {"signature_name": "recommend", "inputs": {"user_id": ["A1ZCPG3D3HGRSS"], "k": 5}}

Row requests (``instances``) get ``predictions`` back, columnar ones (``inputs``) get ``outputs``, as from TF
Serving. The ``kserve`` SDK cannot be installed beside the pinned pipeline stack (it needs pandas < 3), so this
module runs in its own environment (``make serve``); nothing else in the library imports it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import tensorflow as tf
from kserve.errors import InvalidInput

from musicrec.errors import ModelLoadError
from musicrec.io.object_store import open_store
from musicrec.models import bundles
from musicrec.release.model_store import latest_version

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class ServedModel:
    """A model to serve: the name clients address and the SavedModel directory it answers from."""

    name: str
    version_dir: Path


def resolve_model(spec: str) -> ServedModel:
    """Turn ``[NAME=]PATH`` into the model to serve.

    ``PATH`` is a version directory (it holds ``saved_model.pb``) or a model base whose newest complete version
    is served, as TF Serving does. ``NAME`` defaults to the model base's directory name (``sentiment``,
    ``recommender``).

    Raises:
        ModelLoadError: ``PATH`` is neither, or is not a local directory.
    """
    name, _, path_text = spec.rpartition("=")
    path = Path(path_text).expanduser()
    if "://" in path_text:
        raise ModelLoadError(f"--model {spec}: serve reads a local directory; copy the model base here first")
    if (path / bundles.SAVED_MODEL_FILE).is_file():
        return ServedModel(name or (path.parent.name if path.name.isdigit() else path.name), path)
    if not path.is_dir():
        raise ModelLoadError(f"--model {spec}: no such directory")
    version = latest_version(open_store(str(path)))
    if version is None:
        raise ModelLoadError(f"--model {spec}: neither a SavedModel nor a model base with a complete version")
    return ServedModel(name or path.name, path / str(version))


def _tensor(name: str, value: Any, spec: tf.TensorSpec) -> tf.Tensor:
    try:
        tensor = tf.constant(value, dtype=spec.dtype)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input {name!r}: expected {spec.dtype.name} values ({error})") from None
    if not spec.shape.is_compatible_with(tensor.shape):
        raise InvalidInput(f"input {name!r}: expected shape {spec.shape.as_list()}, got {tensor.shape.as_list()}")
    return tensor


def _columns_of_rows(instances: list[Any], specs: dict[str, tf.TensorSpec]) -> dict[str, Any]:
    """TF Serving's row format as columns; a scalar input (``k``) must be the same in every row."""
    if len(specs) == 1 and not all(isinstance(row, dict) for row in instances):
        return {next(iter(specs)): instances}
    if not all(isinstance(row, dict) for row in instances):
        raise InvalidInput("each instance must be an object of the signature's inputs")
    columns: dict[str, Any] = {}
    for name, spec in specs.items():
        lacking = [i for i, row in enumerate(instances) if row.get(name) is None]
        if lacking:
            raise InvalidInput(
                f"instance {lacking[0]} has no {name!r} (the signature takes {', '.join(sorted(specs))})"
            )
        values = [row[name] for row in instances]
        if spec.shape.rank == 0:
            if len(set(map(repr, values))) != 1:
                raise InvalidInput(f"input {name!r} is one value per request: give the same in every instance")
            columns[name] = values[0]
        else:
            columns[name] = values
    return columns


def _op_error(message: str) -> str:
    """The line of a TensorFlow runtime error that names the cause (not its node and stack boilerplate)."""
    boilerplate = ("Graph execution error", "Detected at node", "<stack traces")
    causes = [line for line in message.splitlines()
              if line.strip() and not line.startswith(("\t", " ", *boilerplate))]  # fmt: skip
    return causes[-1] if causes else message


def _json_values(array: np.ndarray) -> Any:
    if array.dtype.kind in "SO":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


class SignatureModel(kserve.Model):
    """One SavedModel behind KServe's V1 protocol, every signature callable by ``signature_name``."""

    def __init__(self, served: ServedModel) -> None:
        super().__init__(served.name)
        self.served = served
        self.signatures: dict[str, Any] = {}

    def load(self) -> bool:
        """Load the SavedModel's signatures once (a missing or broken model fails the server's start)."""
        self.signatures = bundles.load_all_signatures(self.served.version_dir, DEFAULT_SIGNATURE)
        log.info("serving %s from %s (signatures: %s)", self.name, self.served.version_dir,
                 ", ".join(sorted(self.signatures)))  # fmt: skip
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Answer a TF Serving REST body: ``instances`` (rows) or ``inputs`` (columns), and ``signature_name``.

        Raises:
            InvalidInput: (HTTP 400) an unknown signature, a missing or extra input, or a value of the wrong type
                or shape.
        """
        if isinstance(payload, bytes | str):  # a body sent without a JSON content type, as TF Serving accepts
            try:
                payload = json.loads(payload)
            except ValueError:
                raise InvalidInput("the request body is not JSON") from None
        if not isinstance(payload, dict):
            raise InvalidInput("the request body must be a JSON object with 'instances' or 'inputs'")
        signature_name = payload.get("signature_name", DEFAULT_SIGNATURE)
        if signature_name not in self.signatures:
            raise InvalidInput(
                f"no signature {signature_name!r}; this model has {', '.join(sorted(self.signatures))}"
            )
        signature = self.signatures[signature_name]
        specs: dict[str, tf.TensorSpec] = signature.structured_input_signature[1]
        rows = "instances" in payload
        if rows == ("inputs" in payload):
            raise InvalidInput("give exactly one of 'instances' (rows) and 'inputs' (columns)")
        if rows:
            if not isinstance(payload["instances"], list) or not payload["instances"]:
                raise InvalidInput("'instances' must be a non-empty list")
            columns = _columns_of_rows(payload["instances"], specs)
        else:
            columns = (
                payload["inputs"]
                if isinstance(payload["inputs"], dict)
                else {next(iter(specs)): payload["inputs"]}
            )
        missing, extra = specs.keys() - columns.keys(), columns.keys() - specs.keys()
        if missing or extra:
            raise InvalidInput(f"signature {signature_name!r} takes {', '.join(sorted(specs))}"
                               + (f"; missing {', '.join(sorted(missing))}" if missing else "")
                               + (f"; unknown {', '.join(sorted(extra))}" if extra else ""))  # fmt: skip
        try:
            outputs = signature(**{name: _tensor(name, columns[name], spec) for name, spec in specs.items()})
        except tf.errors.InvalidArgumentError as error:
            raise InvalidInput(f"signature {signature_name!r}: {_op_error(error.message)}") from None
        values = {name: _json_values(tensor.numpy()) for name, tensor in outputs.items()}
        if not rows:
            return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        count = len(next(iter(values.values())))
        return {"predictions": [{name: value[i] for name, value in values.items()} for i in range(count)]}


def serve(models: list[ServedModel], http_port: int) -> None:
    """Serve ``models`` over HTTP on ``http_port`` (V1 protocol) until SIGINT or SIGTERM."""
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"two models share a name ({', '.join(names)}): name them with NAME=PATH")
    signature_models = [SignatureModel(model) for model in models]
    for model in signature_models:
        model.load()
    kserve.ModelServer(http_port=http_port, enable_grpc=False, workers=1).start(signature_models)
