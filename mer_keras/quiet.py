"""TensorFlow's and CUDA's start-up log, kept off the command line's stderr (issue 22).

TensorFlow's native libraries print lines while they load (absl's pre-initialisation
warning, oneDNN, missing CUDA drivers) straight to file descriptor 2, before
``TF_CPP_MIN_LOG_LEVEL`` applies (observed with TensorFlow 2.21), and a failed ``cuInit``
is logged at ERROR level on every machine without a GPU. :func:`quiet_tensorflow` sets
the logging levels of :data:`QUIET_ENV` and installs :class:`QuietTensorFlowImport`, which
runs the first ``import tensorflow`` with file descriptor 2 on ``os.devnull``; nothing is
imported until a command needs TensorFlow. Worker processes started by this process
(``spawn``) inherit ``MER_KERAS_QUIET_TF=1`` and install the finder when they import
``mer_keras``. A user who sets ``TF_CPP_MIN_LOG_LEVEL`` keeps every line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}
"""Logging levels of TensorFlow's C++ core, gRPC and glog: errors reach the user as Python exceptions."""

MARKER = "MER_KERAS_QUIET_TF"
"""Set to ``1`` by :func:`quiet_tensorflow`; ``import mer_keras`` then installs the finder (worker processes)."""


@contextlib.contextmanager
def stderr_fd_silenced():
    """File descriptor 2 on ``os.devnull`` inside the block (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class QuietTensorFlowImport:
    """A ``sys.meta_path`` finder: the first ``import tensorflow`` runs with file descriptor 2 silenced.

    It follows importlib's ``MetaPathFinder.find_spec`` protocol: it finds the normal spec
    and wraps only its loader's ``exec_module``, then removes itself from ``sys.meta_path``.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with stderr_fd_silenced():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def install_import_hook() -> None:
    """Put :class:`QuietTensorFlowImport` first on ``sys.meta_path`` unless TensorFlow is loaded or it is there."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


def quiet_tensorflow() -> None:
    """Quiet TensorFlow's and CUDA's log for this process and its workers (unless ``TF_CPP_MIN_LOG_LEVEL`` is set)."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ[MARKER] = "1"
    install_import_hook()


__all__ = ["MARKER", "QUIET_ENV", "QuietTensorFlowImport", "install_import_hook", "quiet_tensorflow",
           "stderr_fd_silenced"]
